"""Frame labels (fes_jax.preprocess.labels) on hand-made intervals with known answers."""

import math

import numpy as np
import pytest

from fes_jax.data.types import ExprType, Interval, Video
from fes_jax.preprocess import labels as L

ME, MAE = ExprType.ME, ExprType.MAE
E1, E4, E9 = (math.exp(-j * j / 32) for j in (1, 2, 3))


def _video(n, *intervals):
  return Video("s1", "s1_v", 30.0, num_frames=n, intervals=list(intervals))


def _iv(onset, apex, offset, type_):
  return Interval(onset=onset, apex=apex, offset=offset, type=type_)


def _frames(n, values: dict, default=0):
  """Array for frames 1..n: ``values`` maps frame (or range of frames) -> value."""
  out = np.full(n, default, np.float64)
  for frames, value in values.items():
    for f in (frames if isinstance(frames, range) else [frames]):
      out[f - 1] = value
  return out


def test_single_me_interval():
  fl = L.frame_labels(_video(30, _iv(10, 15, 20, ME)))
  np.testing.assert_array_equal(
      fl.me_onoff, _frames(30, {range(9, 12): 0, range(19, 22): 1}, default=2))
  np.testing.assert_allclose(fl.me_apex, _frames(30, {15: 1, 14: E1, 16: E1}), rtol=1e-7)
  np.testing.assert_array_equal(fl.me_expr, _frames(30, {range(10, 21): 1}))
  np.testing.assert_array_equal(fl.cls, _frames(30, {range(10, 21): 2}))
  np.testing.assert_array_equal(fl.mae_onoff, np.full(30, 2))
  np.testing.assert_array_equal(fl.mae_apex, np.zeros(30))
  expected = np.zeros((30, 8))
  expected[9, 0] = expected[14, 1] = expected[19, 2] = 1
  expected[9:20, 3] = 1
  np.testing.assert_array_equal(fl.indicators_Nx8, expected)
  for name, dtype in (("me_onoff", np.int32), ("mae_onoff", np.int32), ("cls", np.int32),
                      ("me_apex", np.float32), ("mae_expr", np.float32),
                      ("indicators_Nx8", np.float32)):
    assert getattr(fl, name).dtype == dtype, name


def test_overlapping_mae_and_me_mae_wins_contrastive():
  fl = L.frame_labels(_video(40, _iv(10, 15, 20, ME), _iv(18, 24, 30, MAE)))
  np.testing.assert_array_equal(
      fl.mae_onoff, _frames(40, {range(15, 22): 0, range(27, 34): 1}, default=2))
  np.testing.assert_allclose(
      fl.mae_apex, _frames(40, {24: 1, 23: E1, 25: E1, 22: E4, 26: E4, 21: E9, 27: E9}),
      rtol=1e-7)
  np.testing.assert_array_equal(fl.mae_expr, _frames(40, {range(18, 31): 1}))
  np.testing.assert_array_equal(fl.me_expr, _frames(40, {range(10, 21): 1}))
  np.testing.assert_array_equal(fl.cls, _frames(40, {range(10, 18): 2, range(18, 31): 1}))
  np.testing.assert_array_equal(  # ME targets untouched by the MaE
      fl.me_onoff, _frames(40, {range(9, 12): 0, range(19, 22): 1}, default=2))


def test_offset_wins_overlap():
  fl = L.frame_labels(_video(20, _iv(5, 7, 9, MAE), _iv(12, 13, 14, ME)))
  # MaE onset +-3 = 2..8, offset +-3 = 6..12; offsets written last.
  np.testing.assert_array_equal(
      fl.mae_onoff, _frames(20, {range(2, 6): 0, range(6, 13): 1}, default=2))
  # ME onset +-1 = 11..13, offset +-1 = 13..15.
  np.testing.assert_array_equal(
      fl.me_onoff, _frames(20, {range(11, 13): 0, range(13, 16): 1}, default=2))


def test_offset_of_one_interval_wins_over_onset_of_the_next():
  fl = L.frame_labels(_video(20, _iv(3, 4, 6, ME), _iv(7, 8, 10, ME)))
  # offset 6 -> 5..7 (1), onset 7 -> 6..8 (0): 6 and 7 go to the offset.
  np.testing.assert_array_equal(
      fl.me_onoff, _frames(20, {range(2, 5): 0, range(5, 8): 1, 8: 0, range(9, 12): 1},
                           default=2))


def test_intervals_touching_the_video_edges():
  fl = L.frame_labels(_video(5, _iv(1, 2, 3, ME), _iv(2, 5, 5, MAE)))
  np.testing.assert_array_equal(fl.me_onoff, [0, 1, 1, 1, 2])
  np.testing.assert_allclose(fl.me_apex, [E1, 1, E1, 0, 0], rtol=1e-7)
  np.testing.assert_array_equal(fl.mae_onoff, [0, 1, 1, 1, 1])
  np.testing.assert_allclose(fl.mae_apex, [0, E9, E4, E1, 1], rtol=1e-7)
  np.testing.assert_array_equal(fl.cls, [2, 1, 1, 1, 1])
  np.testing.assert_array_equal(fl.indicators_Nx8[:, 6], [0, 0, 0, 0, 1])


def test_apex_values_and_overlapping_apexes_keep_the_max():
  fl = L.frame_labels(_video(20, _iv(8, 10, 10, ME), _iv(11, 11, 13, ME)))
  np.testing.assert_allclose(
      fl.me_apex, _frames(20, {9: E1, 10: 1, 11: 1, 12: E1}), rtol=1e-7)
  assert fl.me_apex[9] == 1.0 and fl.me_apex[10] == 1.0  # not overwritten by the neighbour
  assert abs(float(fl.me_apex[8]) - math.exp(-1 / 32)) < 1e-7
  np.testing.assert_allclose(L.apex_targets(np.eye(1, 9, 4)[0], 3),
                             [0, E9, E4, E1, 1, E1, E4, E9, 0], rtol=1e-7)


def test_unmatchable_offset_gets_onset_and_span_to_apex_only():
  fl = L.frame_labels(_video(20, _iv(5, 8, None, MAE)))
  np.testing.assert_array_equal(fl.mae_onoff, _frames(20, {range(2, 9): 0}, default=2))
  np.testing.assert_array_equal(fl.mae_expr, _frames(20, {range(5, 9): 1}))
  np.testing.assert_array_equal(fl.indicators_Nx8[:, 6], np.zeros(20))
  assert fl.indicators_Nx8[7, 5] == 1


def test_missing_apex_has_no_apex_target():
  fl = L.frame_labels(_video(20, _iv(5, None, 9, ME)))
  np.testing.assert_array_equal(fl.me_apex, np.zeros(20))
  np.testing.assert_array_equal(fl.me_expr, _frames(20, {range(5, 10): 1}))


def test_intervals_beyond_the_end_are_clamped_or_ignored():
  fl = L.frame_labels(_video(20, _iv(18, 22, 25, ME), _iv(25, 26, 30, MAE)))
  assert fl.indicators_Nx8[19, 1] == 1 and fl.indicators_Nx8[19, 2] == 1
  np.testing.assert_array_equal(fl.me_expr, _frames(20, {range(18, 21): 1}))
  np.testing.assert_array_equal(fl.indicators_Nx8[:, 4:], np.zeros((20, 4)))


def test_packed_and_int_forms_are_consistent():
  rng = np.random.default_rng(0)
  ivs = []
  for _ in range(12):
    onset = int(rng.integers(1, 190))
    offset = int(min(onset + rng.integers(0, 30), 200))
    ivs.append(_iv(onset, int(rng.integers(onset, offset + 1)), offset,
                   ME if rng.random() < 0.5 else MAE))
  fl = L.frame_labels(_video(200, *ivs))
  again = L.targets_from_indicators(fl.indicators_Nx8)
  for name, value in fl.as_dict().items():
    np.testing.assert_array_equal(value, again.as_dict()[name], err_msg=name)
  ind = fl.indicators_Nx8
  np.testing.assert_array_equal(fl.me_expr, ind[:, 3])
  np.testing.assert_array_equal(fl.mae_expr, ind[:, 7])
  np.testing.assert_array_equal(fl.me_apex == 1, ind[:, 1] == 1)
  np.testing.assert_array_equal(fl.mae_apex == 1, ind[:, 5] == 1)
  for col, onoff, r in ((0, fl.me_onoff, 1), (4, fl.mae_onoff, 3)):
    for f in np.flatnonzero(ind[:, col + 2]):  # every offset neighbourhood says "offset"
      assert (onoff[max(f - r, 0):f + r + 1] == L.OFFSET).all()
    near_onset = np.convolve(ind[:, col], np.ones(2 * r + 1), "same") > 0
    near_offset = np.convolve(ind[:, col + 2], np.ones(2 * r + 1), "same") > 0
    np.testing.assert_array_equal(onoff == L.ONSET, near_onset & ~near_offset)
    np.testing.assert_array_equal(onoff == L.NONE, ~near_onset & ~near_offset)
  np.testing.assert_array_equal(fl.cls == L.MAE_CLASS, ind[:, 7] == 1)
  np.testing.assert_array_equal(fl.cls == L.ME_CLASS, (ind[:, 3] == 1) & (ind[:, 7] == 0))
  rows = np.array([0, 5, 199])
  taken = fl.take(rows)
  np.testing.assert_array_equal(taken.indicators_Nx8, ind[rows])
  assert taken.num_frames == 3 and fl.as_dict()["labels"].shape == (200, 8)


def test_frame_count_errors():
  video = Video("s1", "v", 30.0, intervals=[_iv(1, 2, 3, ME)])
  with pytest.raises(ValueError, match="no frame count"):
    L.frame_labels(video)
  assert L.frame_labels(video, num_frames=4).num_frames == 4
  video.num_frames = 5
  with pytest.raises(ValueError, match="5 frames"):
    L.frame_labels(video, num_frames=4)
