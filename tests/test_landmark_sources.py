"""Landmarks of a whole video: tracking with re-detection, files, frames without a face."""

import numpy as np
import pytest

from fes_jax.data.errors import DataError
from fes_jax.preprocess import landmark_sources as ls

from fixtures import LM


class FakeDetector:
  """Face at LM + frame value; 'tracking' drifts when asked to, detection is exact."""

  def __init__(self, no_face=(), bad_tracking=()):
    self.no_face, self.bad_tracking, self.calls = set(no_face), set(bad_tracking), []

  def detect(self, frame, prev_pts=None):
    k = int(frame[0, 0, 0])
    self.calls.append((k, prev_pts is not None))
    if k in self.no_face:
      return None
    if prev_pts is not None and k in self.bad_tracking:
      return LM + 500.0  # lost: far from the previous face
    return LM + k


def _frames(n):
  return [np.full((4, 4, 3), k, np.uint8) for k in range(n)]


def test_detects_once_then_tracks_and_redetects_on_failure():
  det = FakeDetector(bad_tracking={3})
  out = ls.track_video(_frames(5), det, name="v")
  assert [c for c in det.calls] == [(0, False), (1, True), (2, True), (3, True), (3, False),
                                    (4, True)]
  assert out.redetections == 1 and out.missing == 0
  np.testing.assert_allclose(out.points[3], LM + 3)


def test_frames_without_a_face_are_carried_over_and_counted():
  out = ls.track_video(_frames(6), FakeDetector(no_face={0, 1, 4}), name="v")
  assert out.missing == 3
  np.testing.assert_allclose(out.points[0], LM + 2)  # back-filled from the first good frame
  np.testing.assert_allclose(out.points[4], LM + 3)  # carried over from the last good one
  with pytest.raises(DataError, match=r"clip7: no face found in any of the 3 frames"):
    ls.track_video(_frames(3), FakeDetector(no_face={0, 1, 2}), name="clip7")


def test_npy_and_openface_files(tmp_path):
  arr = np.stack([LM + k for k in range(4)]).astype(np.float32)
  arr[2] = np.nan
  np.save(tmp_path / "v.npy", arr)
  out = ls.read_landmark_file(tmp_path / "v.npy", 4)
  assert out.missing == 1
  np.testing.assert_allclose(out.points[2], LM + 1)
  with pytest.raises(DataError, match=r"v.npy: has 4 landmark rows for a video of 5 frames"):
    ls.read_landmark_file(tmp_path / "v.npy", 5)

  header = ["frame", "success"] + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
  rows = []
  for k, ok in enumerate([1, 0, 1]):
    pts = LM + k
    rows.append([k + 1, ok] + list(pts[:, 0]) + list(pts[:, 1]))
  (tmp_path / "v.csv").write_text("\n".join(", ".join(map(str, r)) for r in [header] + rows))
  out = ls.read_landmark_file(tmp_path / "v.csv", 3)
  assert out.missing == 1
  np.testing.assert_allclose(out.points[2], LM + 2, rtol=1e-6)
  np.testing.assert_allclose(out.points[1], LM, rtol=1e-6)
  (tmp_path / "bad.csv").write_text("frame,x_0\n1,2\n")
  with pytest.raises(DataError, match=r"bad.csv: OpenFace CSV lacks landmark columns"):
    ls.read_landmark_file(tmp_path / "bad.csv", 1)
