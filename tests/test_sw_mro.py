"""SW-MRO: flow reductions, ROI geometry, head-motion compensation, known translations."""

import numpy as np
import pytest

from fes_jax.preprocess import flow as flow_lib
from fes_jax.preprocess import rois as rois_lib
from fes_jax.preprocess import sw_mro

from fixtures import LM as _LM, shift as _shift, texture as _texture

def test_reductions_on_hand_made_vectors():
  v = np.array([[1.0, 0.1], [2.0, 0.0], [1.5, -0.1], [0.0, 3.0], [-1.0, 0.0]])
  # 8 bins of 45 degrees: three vectors near 0 / 360 degrees (bins 0 and 7) -> bin 0 holds
  # [1, 0.1] and [2, 0], bin 7 holds [1.5, -0.1]; bin 0 wins.
  np.testing.assert_allclose(flow_lib.mdmo(v), [1.5, 0.05])
  np.testing.assert_allclose(flow_lib.top_magnitude(v, 0.4), [1.0, 1.5])  # ceil(2): 3.0, 2.0
  # four_bin: [330, 30) holds 3 vectors; top ceil(0.6*3) = 2 by magnitude: [2,0], [1.5,-.1].
  kept = np.array([[2.0, 0.0], [1.5, -0.1]])
  total = kept.sum(0)
  expected = total / np.linalg.norm(total) * np.linalg.norm(kept, axis=1).mean()
  np.testing.assert_allclose(flow_lib.four_bin(v), expected, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown ROI flow reduction"):
    flow_lib.reduce_flow(v.reshape(1, -1, 2), "median")


def test_farneback_recovers_a_known_translation():
  tex = _texture()
  f = flow_lib.farneback(tex[100:300, 200:400], _shift(tex, 0.8, -0.5)[100:300, 200:400])
  np.testing.assert_allclose(np.median(f.reshape(-1, 2), axis=0), [0.8, -0.5], atol=0.05)


def test_roi_geometry_follows_the_landmarks():
  box = rois_lib.face_box(_LM)
  assert box == pytest.approx((160.0, 80.0, 320.0))  # 8d square, d = 40
  lm_face = rois_lib.to_face(_LM, box, 320)
  regions = rois_lib.region_boxes(lm_face, 320)
  boxes = rois_lib.roi_boxes(lm_face, rois_lib.ROI_SETS["nodes10"], regions, 320)
  assert len(boxes) == 10
  for roi, (x0, y0, x1, y1) in zip(rois_lib.ROI_SETS["nodes10"], boxes):
    x, y = lm_face[roi.landmark]
    assert x0 <= x <= x1 and y0 <= y <= y1, roi.name
    rx0, ry0, rx1, ry1 = regions[roi.region]
    assert rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1
  assert [r.landmark for r in rois_lib.ROI_SETS["nodes10"]] == [20, 19, 18, 23, 24, 25, 48, 54,
                                                                51, 57]


def test_window_indices_pad_the_edges():
  assert sw_mro.window_frame_indices(0, 10, 5) == [0, 0, 0, 1, 2]
  assert sw_mro.window_frame_indices(9, 10, 5) == [7, 8, 9, 9, 9]
  assert sw_mro.window_frame_indices(4, 10, 5) == [2, 3, 4, 5, 6]


def _translating(n, tx, ty):
  tex = _texture()
  frames = [_shift(tex, tx * k, ty * k) for k in range(n)]
  return frames, np.stack([_LM + [tx * k, ty * k] for k in range(n)])


@pytest.mark.parametrize("head_motion", ["paper", "zhao"])
def test_nose_compensation_cancels_a_pure_head_translation(head_motion):
  n, w = 8, 9
  frames, lms = _translating(n, 0.12, -0.06)
  raw = sw_mro.extract(frames, lms, sw_mro.SwMroConfig(window=w, head_motion="none"))
  assert raw.shape == (n, w, 10, 2) and raw.dtype == np.float32
  assert np.all(raw[:, 0] == 0)  # frame 1 of every window
  # Window 4 spans frames 0..8 (clamped to 7): displacement 0.12 * 7 px, face scale 1.
  np.testing.assert_allclose(raw[4, -1].mean(0), [0.84, -0.42], atol=0.08)
  comp = sw_mro.extract(frames, lms, sw_mro.SwMroConfig(window=w, head_motion=head_motion))
  assert np.abs(comp[4, -1]).max() < 0.1 * np.abs(raw[4, -1]).max()


def test_local_motion_shows_only_at_its_rois():
  import cv2

  n, w = 8, 9
  tex = _texture(1)
  mask = np.zeros(tex.shape, np.float32)
  x0, y0 = _LM[48:68].min(0).astype(int)
  x1, y1 = _LM[48:68].max(0).astype(int)
  mask[y0 - 5:y1 + 5, x0 - 5:x1 + 5] = 1
  mask = cv2.GaussianBlur(mask, (0, 0), 3)
  frames = [(tex * (1 - mask) + _shift(tex, 0, 0.1 * k) * mask).astype(np.uint8)
            for k in range(n)]
  f = sw_mro.extract(frames, np.stack([_LM] * n), sw_mro.SwMroConfig(window=w))
  brows, mouth = f[4, -1, :6], f[4, -1, 6:]
  assert np.abs(brows).max() < 0.05
  assert np.all(mouth[:, 1] > 0.4) and np.abs(mouth[:, 0]).max() < 0.1


def test_adjacent_mode_sees_per_frame_steps():
  n, w = 8, 9
  frames, lms = _translating(n, 0.2, 0.0)
  adj = sw_mro.extract(frames, lms, sw_mro.SwMroConfig(window=w, head_motion="none",
                                                       temporal="adjacent"))
  # Frames 1..7 of window 4 each move 0.2 px from the previous one; the clamped last one 0.
  np.testing.assert_allclose(adj[4, 1:8].mean(1)[:, 0], 0.2, atol=0.05)
  assert abs(adj[4, 8].mean(0)[0]) < 0.02


def test_naive_loop_computes_the_same_quantity():
  n, w = 4, 5
  frames, lms = _translating(n, 0.1, 0.05)
  fast = sw_mro.extract(frames, lms, sw_mro.SwMroConfig(window=w, head_motion="none"))
  naive_cfg = sw_mro.SwMroConfig(window=w)
  naive = sw_mro.extract_naive(frames, lms, naive_cfg)
  exact = sw_mro.extract(frames, lms, naive_cfg)
  assert naive.shape == exact.shape
  # Both compensate the translation; region crops and full-face crops differ only slightly.
  assert np.abs(naive).max() < 0.1 and np.abs(exact).max() < 0.1
  assert np.abs(fast).max() > 0.2


def test_bad_inputs_are_errors():
  frames, lms = _translating(3, 0.1, 0.0)
  with pytest.raises(ValueError, match="video has 3 frames but 4 landmark rows"):
    sw_mro.extract(frames, np.concatenate([lms, lms[:1]]), sw_mro.SwMroConfig(window=3))
  with pytest.raises(ValueError, match="more frames than its 2 landmark rows"):
    sw_mro.extract(frames, lms[:2], sw_mro.SwMroConfig(window=3))
  with pytest.raises(ValueError, match="head_motion"):
    sw_mro.SwMroConfig(head_motion="magic")
