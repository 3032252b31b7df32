"""Frame sources: numbered image folders and video files, with 1-based frame numbers.

An image folder's frame number is the number in each file's name (the last run of digits of
the stem: ``img12.jpg`` -> 12, ``006_1_0012.jpg`` -> 12, ``12.jpg`` -> 12), sorted
numerically, never lexicographically. Numbering may start above 1 and have gaps (CAS(ME)^3);
annotations refer to these numbers. A video file's frames are numbered 1..N in decoding order.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Iterator

import numpy as np

from fes_jax.data.errors import FrameSourceError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def frame_number(filename: str) -> int | None:
  """The frame number in an image file name, or None when it has no digits."""
  match = _DIGITS.search(pathlib.Path(filename).stem)
  return int(match.group(1)) if match else None


def _imread_rgb(path: str) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel

  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise FrameSourceError("cannot read image (missing, truncated or not an image)", file=path)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageFolder:
  """A folder of numbered image files."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    if not self.path.is_dir():
      raise FrameSourceError("frame folder does not exist", file=self.path)
    files: dict[int, str] = {}
    for entry in os.scandir(self.path):
      if not entry.is_file() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
        continue
      number = frame_number(entry.name)
      if number is None:
        continue
      if number in files:
        raise FrameSourceError(
            f"two images have frame number {number}: {files[number]!r} and {entry.name!r}",
            file=self.path)
      files[number] = entry.name
    if not files:
      raise FrameSourceError(
          f"video folder has no numbered frames (looked for {', '.join(IMAGE_EXTENSIONS)})",
          file=self.path)
    self.frame_numbers: list[int] = sorted(files)
    self._files = files

  def __len__(self) -> int:
    return len(self.frame_numbers)

  def __repr__(self) -> str:
    return f"ImageFolder({str(self.path)!r}, frames {self.first}..{self.last}, {len(self)})"

  @property
  def first(self) -> int:
    return self.frame_numbers[0]

  @property
  def last(self) -> int:
    return self.frame_numbers[-1]

  @property
  def missing(self) -> list[int]:
    """Frame numbers absent between the first and the last (gaps)."""
    present = set(self.frame_numbers)
    return [n for n in range(self.first, self.last + 1) if n not in present]

  def file(self, number: int) -> pathlib.Path:
    try:
      return self.path / self._files[number]
    except KeyError:
      raise FrameSourceError(f"no frame {number} (frames {self.first}..{self.last}, "
                             f"{len(self.missing)} gaps)", file=self.path) from None

  def read(self, number: int) -> np.ndarray:
    """Frame ``number`` as an RGB uint8 array (H, W, 3)."""
    return _imread_rgb(str(self.file(number)))

  def iter_frames(self) -> Iterator[tuple[int, np.ndarray]]:
    for number in self.frame_numbers:
      yield number, self.read(number)


class VideoFile:
  """A video file decoded with OpenCV; frames numbered 1..N."""

  def __init__(self, path: str | os.PathLike):
    import cv2  # pylint: disable=import-outside-toplevel

    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise FrameSourceError("video file does not exist", file=self.path)
    cap = cv2.VideoCapture(str(self.path))
    try:
      if not cap.isOpened():
        raise FrameSourceError("OpenCV cannot open this video", file=self.path)
      self.fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
      reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
      cap.release()
    # Container frame counts are often wrong; count by grabbing once (grab does not decode).
    self.reported_frames = reported
    self._count = self._count_frames()
    if self._count == 0:
      raise FrameSourceError("video has no decodable frames", file=self.path)
    self.frame_numbers = list(range(1, self._count + 1))

  def _count_frames(self) -> int:
    import cv2  # pylint: disable=import-outside-toplevel

    cap = cv2.VideoCapture(str(self.path))
    count = 0
    while cap.grab():
      count += 1
    cap.release()
    return count

  def __len__(self) -> int:
    return self._count

  def __repr__(self) -> str:
    return f"VideoFile({str(self.path)!r}, {self._count} frames, {self.fps} fps)"

  first = property(lambda self: 1)
  last = property(lambda self: self._count)
  missing = property(lambda self: [])

  def iter_frames(self) -> Iterator[tuple[int, np.ndarray]]:
    import cv2  # pylint: disable=import-outside-toplevel

    cap = cv2.VideoCapture(str(self.path))
    try:
      for number in self.frame_numbers:
        ok, frame = cap.read()
        if not ok:
          raise FrameSourceError(f"cannot decode frame {number} of {self._count}",
                                 file=self.path)
        yield number, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
      cap.release()

  def read(self, number: int) -> np.ndarray:
    """Frame ``number`` (1-based) as RGB uint8; seeks, so prefer ``iter_frames`` for runs."""
    import cv2  # pylint: disable=import-outside-toplevel

    if not 1 <= number <= self._count:
      raise FrameSourceError(f"no frame {number} (video has {self._count})", file=self.path)
    cap = cv2.VideoCapture(str(self.path))
    try:
      cap.set(cv2.CAP_PROP_POS_FRAMES, number - 1)
      ok, frame = cap.read()
    finally:
      cap.release()
    if not ok:
      raise FrameSourceError(f"cannot decode frame {number}", file=self.path)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def open_frames(path: str | os.PathLike) -> ImageFolder | VideoFile:
  """An image folder or a video file, chosen by what ``path`` is."""
  path = pathlib.Path(path)
  if path.is_dir():
    return ImageFolder(path)
  if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
    return VideoFile(path)
  if path.is_file():
    raise FrameSourceError(f"not a video file (known: {', '.join(VIDEO_EXTENSIONS)})",
                           file=path)
  raise FrameSourceError("no such frame folder or video file", file=path)
