"""One typed model for every dataset: dataset -> subjects -> videos -> intervals.

Frame indices are 1-based and inclusive everywhere in this model (``onset``, ``apex``,
``offset`` are frame numbers of the video as stored, after any frame-rate resampling).
Readers convert whatever their file uses at the edges.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Any, Iterator


class ExprType(str, enum.Enum):
  """Expression type. ``str`` values are the MEGC submission spelling."""

  MAE = "mae"
  ME = "me"

  @property
  def type_idx(self) -> int:
    """The prepared-CSV code: 1 = macro, 2 = micro."""
    return 1 if self is ExprType.MAE else 2

  @classmethod
  def from_type_idx(cls, idx: int) -> "ExprType":
    if idx == 1:
      return cls.MAE
    if idx == 2:
      return cls.ME
    raise ValueError(f"type_idx must be 1 (MaE) or 2 (ME), got {idx!r}")


@dataclasses.dataclass(frozen=True)
class SourceRef:
  """Where a record came from, for error messages and provenance."""

  file: str
  sheet: str | None = None
  row: int | None = None  # 1-based row number as a spreadsheet program shows it

  def __str__(self) -> str:
    parts = [self.file]
    if self.sheet is not None:
      parts.append(f"sheet {self.sheet!r}")
    if self.row is not None:
      parts.append(f"row {self.row}")
    return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Interval:
  """One annotated expression. Frames are 1-based and inclusive."""

  onset: int
  apex: int | None
  offset: int | None  # None only under the ``unmatchable`` missing-offset policy
  type: ExprType
  aus: str = ""
  emotion: str | None = None
  label_id: str | None = None  # the file's own id for the row (e.g. ``006_1_3``)
  source: SourceRef | None = None
  flags: frozenset[str] = frozenset()  # quirk policies that touched this row
  extra: tuple[tuple[str, Any], ...] = ()  # dataset-specific fields, e.g. objective class

  @property
  def length(self) -> int | None:
    """Frames from onset to offset inclusive (``offset - onset + 1``)."""
    return None if self.offset is None else self.offset - self.onset + 1

  def contains(self, other: "Interval") -> bool:
    if self.offset is None or other.offset is None:
      return False
    return self.onset <= other.onset and other.offset <= self.offset

  def sort_key(self) -> tuple:
    return (self.onset, self.offset if self.offset is not None else -1, self.type.value)


@dataclasses.dataclass
class Video:
  """A long video of one subject with its annotated intervals."""

  subject: str
  name: str  # unique within the dataset, e.g. ``s15_0401`` or ``006_1``
  fps: float
  num_frames: int | None = None
  frames: Any = None  # a fes_jax.data.frames.FrameSource, attached when the frames exist
  intervals: list[Interval] = dataclasses.field(default_factory=list)
  fps_divisor: int = 1  # frames of the original video per frame of this one
  original_num_frames: int | None = None  # frame count before resampling, when known

  def to_original_frame(self, frame: int) -> int:
    """Maps a 1-based frame of this (possibly resampled) video to the original numbering."""
    original = 1 + (frame - 1) * self.fps_divisor
    if self.original_num_frames is not None:
      original = min(original, self.original_num_frames)
    return original


@dataclasses.dataclass
class Subject:
  name: str
  videos: dict[str, Video] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Dataset:
  """A dataset as read from its annotation file(s)."""

  name: str
  fps: float
  subjects: dict[str, Subject] = dataclasses.field(default_factory=dict)
  quirks: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  source: str = ""

  def videos(self) -> Iterator[Video]:
    for subject in self.subjects.values():
      yield from subject.videos.values()

  def intervals(self) -> Iterator[tuple[Video, Interval]]:
    for video in self.videos():
      for interval in video.intervals:
        yield video, interval

  def video(self, name: str) -> Video:
    for v in self.videos():
      if v.name == name:
        return v
    raise KeyError(f"no video {name!r} in dataset {self.name!r}")

  def add_video(self, video: Video) -> Video:
    """Adds ``video`` (or returns the one already there under that name)."""
    subject = self.subjects.setdefault(video.subject, Subject(video.subject))
    return subject.videos.setdefault(video.name, video)

  def sort(self) -> None:
    """Orders subjects, videos and intervals deterministically."""
    self.subjects = {k: self.subjects[k] for k in sorted(self.subjects)}
    for s in self.subjects.values():
      s.videos = {k: s.videos[k] for k in sorted(s.videos)}
      for v in s.videos.values():
        v.intervals.sort(key=Interval.sort_key)
