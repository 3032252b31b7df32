"""Per-frame 68-point landmarks of a whole video, behind one interface.

``track_video`` runs a detector over a video's frames once (never once per window): it
detects on the first frame, then tracks from the previous frame's landmarks, and re-detects
when tracking fails. Frames without a face are carried over from the last good frame (or back
from the first good one), counted and reported; a video with no face at all is an error naming
it. ``read_landmark_file`` reads landmarks from a file instead: a ``.npy`` array (N, 68, 2)
(the synthetic ground truth, or your own) or an OpenFace ``.csv`` (columns ``x_0..x_67``,
``y_0..y_67``, optional ``success``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import Callable, Iterable, Protocol

import numpy as np

from fes_jax.data.errors import DataError


class FrameDetector(Protocol):
  def detect(self, frame_rgb: np.ndarray, prev_pts: np.ndarray | None = None
             ) -> np.ndarray | None:
    """68 landmarks (68, 2) float32 of the face in ``frame_rgb``, or None."""


@dataclasses.dataclass
class VideoLandmarks:
  points: np.ndarray  # (N, 68, 2) float32, image pixels (x, y)
  missing: int = 0  # frames without a face, filled from a neighbour
  redetections: int = 0  # tracking failures that fell back to full detection
  source: str = ""

  def report(self) -> dict:
    return {"frames": len(self.points), "missing": self.missing,
            "redetections": self.redetections, "source": self.source}


def _bbox(pts: np.ndarray) -> np.ndarray:
  return np.concatenate([pts.min(0), pts.max(0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  ix = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
  iy = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def track_video(frames: Iterable[np.ndarray], detector: FrameDetector, *, name: str,
                min_iou: float = 0.5, progress: Callable[[int], None] | None = None
                ) -> VideoLandmarks:
  """Landmarks of every frame: detect, then track from the previous frame, re-detect on failure.

  Tracking fails when the tracked landmarks' bounding box overlaps the previous one by less
  than ``min_iou`` (the face jumped or was lost); the frame is then detected from scratch.
  """
  points: list[np.ndarray | None] = []
  prev = None
  redetections = 0
  for frame in frames:
    pts = None
    if prev is not None:
      pts = detector.detect(frame, prev)
      if pts is None or _iou(_bbox(pts), _bbox(prev)) < min_iou:
        redetections += 1
        pts = detector.detect(frame, None)
    else:
      pts = detector.detect(frame, None)
    points.append(None if pts is None else np.asarray(pts, np.float32))
    if pts is not None:
      prev = np.asarray(pts, np.float32)
    if progress is not None:
      progress(1)
  return _fill(points, name=name, source="dlib", redetections=redetections)


def _fill(points: list[np.ndarray | None], *, name: str, source: str,
          redetections: int = 0) -> VideoLandmarks:
  good = [i for i, p in enumerate(points) if p is not None]
  if not points:
    raise DataError("video has no frames", file=name)
  if not good:
    raise DataError(f"no face found in any of the {len(points)} frames", file=name)
  filled = []
  last = points[good[0]]
  for p in points:
    last = p if p is not None else last
    filled.append(last)
  return VideoLandmarks(np.stack(filled).astype(np.float32), len(points) - len(good),
                        redetections, source)


def read_landmark_file(path: str | os.PathLike, num_frames: int) -> VideoLandmarks:
  """Landmarks from ``.npy`` (N, 68, 2) or an OpenFace ``.csv``; must have ``num_frames`` rows.

  Rows that are all NaN (npy) or have ``success == 0`` (OpenFace) count as frames without a
  face and are filled like detector misses.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError("landmark file does not exist", file=path)
  if path.suffix == ".npy":
    arr = np.load(path)
    if arr.ndim != 3 or arr.shape[1:] != (68, 2):
      raise DataError(f"expected an array (N, 68, 2), got {arr.shape}", file=path)
    rows = [None if np.isnan(a).all() else a for a in arr.astype(np.float32)]
    bad = [i for i, a in enumerate(rows) if a is not None and not np.isfinite(a).all()]
    if bad:
      raise DataError(f"non-finite landmarks in frame row {bad[0]}", file=path)
  elif path.suffix == ".csv":
    rows = _read_openface(path)
  else:
    raise DataError("landmark files must be .npy (N, 68, 2) or OpenFace .csv", file=path)
  if len(rows) != num_frames:
    raise DataError(f"has {len(rows)} landmark rows for a video of {num_frames} frames",
                    file=path)
  return _fill(rows, name=str(path), source=str(path))


def _read_openface(path: pathlib.Path) -> list[np.ndarray | None]:
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader)]
    try:
      xs = [header.index(f"x_{i}") for i in range(68)]
      ys = [header.index(f"y_{i}") for i in range(68)]
    except ValueError as e:
      raise DataError(f"OpenFace CSV lacks landmark columns x_0..x_67, y_0..y_67 ({e})",
                      file=path) from None
    success = header.index("success") if "success" in header else None
    rows = []
    for lineno, row in enumerate(reader, 2):
      try:
        if success is not None and float(row[success]) == 0:
          rows.append(None)
          continue
        rows.append(np.array([[float(row[x]), float(row[y])] for x, y in zip(xs, ys)],
                             np.float32))
      except (ValueError, IndexError):
        raise DataError("unparsable landmark row", file=path, row=lineno) from None
  return rows
