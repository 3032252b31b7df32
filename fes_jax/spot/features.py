"""Landmarks and SW-MRO features of one user video (a video file or a numbered frame folder).

Landmarks: dlib once per frame (detect, track, re-detect; frames without a face carried over
from a neighbour, as the preprocess stage does), or a landmark file (``.npy`` (N, 68, 2) or an
OpenFace ``.csv``). Features: :func:`fes_jax.preprocess.sw_mro.extract`, optionally split into
contiguous frame ranges computed in parallel processes. A range's windows are exact: each
range is extracted from its frames plus the window's half-width of context on both sides, and
a window near a range boundary then sees exactly the frames (and edge padding) it sees in the
whole video (tested against one ``extract`` over the whole video).
"""

from __future__ import annotations

import multiprocessing
import pathlib
from typing import Callable, Iterator

import numpy as np

from fes_jax.data.errors import DataError
from fes_jax.data.frames import ImageFolder, VideoFile, open_frames
from fes_jax.preprocess import landmark_sources
from fes_jax.preprocess import sw_mro


def iter_range(source: ImageFolder | VideoFile, lo: int, hi: int) -> Iterator[np.ndarray]:
  """RGB frames ``lo..hi-1`` (0-based positions in the source's frame order)."""
  if isinstance(source, ImageFolder):
    for number in source.frame_numbers[lo:hi]:
      yield source.read(number)
    return
  import cv2  # pylint: disable=import-outside-toplevel

  cap = cv2.VideoCapture(str(source.path))
  try:
    for k in range(lo):
      if not cap.grab():
        raise DataError(f"cannot decode frame {k + 1} of {len(source)}", file=source.path)
    for k in range(lo, hi):
      ok, frame = cap.read()
      if not ok:
        raise DataError(f"cannot decode frame {k + 1} of {len(source)}", file=source.path)
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  finally:
    cap.release()


def landmarks(source: ImageFolder | VideoFile, spec: str = "dlib", *,
              progress: Callable[[int], None] | None = None
              ) -> landmark_sources.VideoLandmarks:
  """68 landmarks per frame: ``spec`` 'dlib', or a landmark file with one row per frame."""
  if spec == "dlib":
    from fes_jax.preprocess.landmarks import DlibLandmarker  # pylint: disable=import-outside-toplevel

    return landmark_sources.track_video(iter_range(source, 0, len(source)), DlibLandmarker(),
                                        name=str(source.path), progress=progress)
  return landmark_sources.read_landmark_file(spec, len(source))


def ranges(n: int, parts: int) -> list[tuple[int, int]]:
  """``parts`` contiguous, near-equal ``[a, b)`` ranges covering ``0..n-1`` (none empty)."""
  parts = max(1, min(parts, n))
  bounds = np.linspace(0, n, parts + 1).round().astype(int)
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def context(a: int, b: int, n: int, window: int) -> tuple[int, int]:
  """The frames ``[lo, hi)`` windows ``a..b-1`` read (window i: frames i - w//2 ...)."""
  h = window // 2
  return max(0, a - h), min(n, b + window - 1 - h)


def range_features(path: str, points_Nx68x2: np.ndarray, cfg: sw_mro.SwMroConfig, a: int,
                   b: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
  """SW-MRO features ``(b - a, w, R, 2)`` of windows ``a..b-1`` of the whole video."""
  n = len(points_Nx68x2)
  lo, hi = context(a, b, n, cfg.window)
  source = open_frames(path)
  counted = None
  if progress is not None:  # count only the range's own windows, not its context
    seen = [0]

    def counted(k):
      seen[0] += k
      if a - lo < seen[0] <= b - lo:
        progress(k)
  out = sw_mro.extract(iter_range(source, lo, hi), points_Nx68x2[lo:hi], cfg, counted)
  return out[a - lo:b - lo]


_COUNTER = None


def _init_worker(counter) -> None:
  global _COUNTER  # pylint: disable=global-statement
  _COUNTER = counter
  import cv2  # pylint: disable=import-outside-toplevel

  cv2.setNumThreads(1)


def _bump(k: int) -> None:
  with _COUNTER.get_lock():
    _COUNTER.value += k


def _range_job(args) -> tuple[int, np.ndarray]:
  path, points, cfg, a, b = args
  return a, range_features(path, points, cfg, a, b, _bump)


def sw_mro_features(path: str | pathlib.Path, points_Nx68x2: np.ndarray,
                    cfg: sw_mro.SwMroConfig, *, workers: int = 1,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
  """SW-MRO features ``(N, w, R, 2)`` float32 of the video at ``path``.

  ``workers`` > 1 splits the windows into that many contiguous ranges, one process each;
  ``progress`` is called with the number of windows done.
  """
  path = str(path)
  n = len(points_Nx68x2)
  try:
    if workers <= 1 or n < 2 * cfg.window:
      return sw_mro.extract(iter_range(open_frames(path), 0, n), points_Nx68x2, cfg, progress)
    parts = ranges(n, workers)
    counter = multiprocessing.get_context("spawn").Value("q", 0)
    out = np.zeros((n, cfg.window, cfg.num_rois, 2), np.float32)
    with multiprocessing.get_context("spawn").Pool(
        len(parts), initializer=_init_worker, initargs=(counter,)) as pool:
      pending = pool.imap_unordered(_range_job, [(path, points_Nx68x2, cfg, a, b)
                                                 for a, b in parts])
      done, reported = 0, 0
      while done < len(parts):
        try:
          a, feats = pending.next(timeout=0.5)
          out[a:a + len(feats)] = feats
          done += 1
        except multiprocessing.TimeoutError:
          pass
        if progress is not None and counter.value > reported:
          progress(counter.value - reported)
          reported = counter.value
    return out
  except (ValueError, FloatingPointError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"SW-MRO failed: {e}", file=path) from e
