"""Named, documented policies for the quirks of the real annotation files.

Every reader turns its rows into :class:`RawRow` (numbers as the file stores them, floats,
no interpretation) and hands them to :func:`finalize_rows`, which applies these policies in a
fixed order and counts, per policy, how many rows each one touched (``Dataset.quirks``):

1. ``fps_divisor`` resampling (SAMM-LV 200 fps -> ~30 fps): original frame ``x`` becomes
   frame ``k = rounding((x - 1) / d) + 1`` of the video that keeps frames 1, 1+d, 1+2d, ...
   With ``d = 7`` and the default rounding this reproduces SpotFormer's
   ``prepared/samm_downsampled7.csv`` (``round((x-1)/7)``, 0-based there) on every row once
   ``beyond_end`` clipping is applied. Counted as ``resampled``.
2. ``rounding`` of fractional frames (SAMM-LV stores e.g. ``566.4``); values within 1e-6 of an
   integer (float noise such as ``3322.9999999999995``) are snapped and not counted.
   ``half_even`` (Python's ``round``, as SpotFormer's code; default), ``half_up``, ``floor``,
   ``ceil``, or ``error``. Counted as ``fractional``.
3. ``onset_zero``: onset 0 means the expression started before the video (SAMM-LV, 10 MaE).
   ``clip`` (onset := 1, default) or ``drop``. Counted as ``onset_zero``.
4. ``missing_offset``: offset 0 or empty (CAS(ME)^2, 44 MaE). ``apex`` (offset := apex,
   the MEGC2020 baseline and MTSN; default), ``apex_plus_20`` (LGSNet, Zhao et al.),
   ``unmatchable`` (kept with ``offset=None``: a ground truth no proposal can match, as ABPN
   and SpotFormer's code effectively do), or ``drop``. Counted as ``missing_offset``.
5. ``missing_apex``: apex -1, 0 or empty (SAMM-LV 6 rows with -1, CAS(ME)^2 one row with 0).
   ``midpoint`` (apex := (onset + offset) // 2, default), ``none`` (apex None), or ``drop``.
   Counted as ``missing_apex``.
6. ``beyond_end``: offset (or onset/apex) past the video's last frame, when the frame count
   is known. ``clip`` (to the last frame, default; this is what reproduces the prepared SAMM
   CSV; an interval whose onset is already past the end is dropped), ``keep``, ``drop``, or
   ``error``. Counted as ``beyond_end``. Note: SAMM-LV's public frame-count file gives 1000
   frames for ``012_4`` while its annotation ``012_4_1`` runs to frame 1524.6; with that file
   the interval is dropped under ``clip``.
7. ``apex_outside``: apex not within onset..offset (CAS(ME)^2 has 3 rows with apex > offset).
   ``clip`` (apex := nearest of onset/offset, default), ``keep``, or ``drop``. Counted as
   ``apex_outside``.
8. Onset after offset is always an error naming file, sheet, row and field.
9. ``duplicates``: rows identical in (video, onset, apex, offset, type) -> ``drop`` (keep the
   first, default), ``keep``, or ``error``. Counted as ``duplicate_row``. A file id that
   appears twice with *different* intervals (SAMM-LV ``037_4_1``: one ME and one MaE) is kept
   and counted as ``duplicate_id``.
10. ``nested``: an interval inside another of the same video (SAMM-LV ME inside MaE).
    ``keep`` (both are ground truth for MEGC evaluation, default), ``drop_inner``, or
    ``drop_outer``. Counted as ``nested`` (the inner interval).

Dropped rows are counted under ``dropped``; a policy name counts every row it touched, whatever
the action.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable

from fes_jax.data.errors import AnnotationError
from fes_jax.data.types import Dataset, ExprType, Interval, SourceRef, Video

ROUNDING = ("half_even", "half_up", "floor", "ceil", "error")
ONSET_ZERO = ("clip", "drop")
MISSING_OFFSET = ("apex", "apex_plus_20", "unmatchable", "drop")
MISSING_APEX = ("midpoint", "none", "drop")
BEYOND_END = ("clip", "keep", "drop", "error")
APEX_OUTSIDE = ("clip", "keep", "drop")
DUPLICATES = ("drop", "keep", "error")
NESTED = ("keep", "drop_inner", "drop_outer")

_INT_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Policies:
  """The quirk policies; defaults documented in the module docstring."""

  rounding: str = "half_even"
  onset_zero: str = "clip"
  missing_offset: str = "apex"
  missing_apex: str = "midpoint"
  beyond_end: str = "clip"
  apex_outside: str = "clip"
  duplicates: str = "drop"
  nested: str = "keep"
  fps_divisor: int = 1

  def __post_init__(self):
    for name, allowed in (("rounding", ROUNDING), ("onset_zero", ONSET_ZERO),
                          ("missing_offset", MISSING_OFFSET), ("missing_apex", MISSING_APEX),
                          ("beyond_end", BEYOND_END), ("apex_outside", APEX_OUTSIDE),
                          ("duplicates", DUPLICATES), ("nested", NESTED)):
      value = getattr(self, name)
      if value not in allowed:
        raise ValueError(f"policy {name}={value!r} is not one of {allowed}")
    if not isinstance(self.fps_divisor, int) or self.fps_divisor < 1:
      raise ValueError(f"fps_divisor must be a positive integer, got {self.fps_divisor!r}")

  @classmethod
  def from_config(cls, cfg: Any) -> "Policies":
    """Builds from a mapping / ConfigDict holding any subset of the fields."""
    if cfg is None:
      return cls()
    names = {f.name for f in dataclasses.fields(cls)}
    items = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
    unknown = set(items) - names
    if unknown:
      raise ValueError(f"unknown annotation policies {sorted(unknown)}; known: {sorted(names)}")
    return cls(**items)


@dataclasses.dataclass
class RawRow:
  """One annotation row as the file stores it. Frame values are floats or None (empty)."""

  subject: str
  video: str
  onset: float | None
  apex: float | None
  offset: float | None
  type: ExprType
  source: SourceRef
  aus: str = ""
  emotion: str | None = None
  label_id: str | None = None
  extra: tuple[tuple[str, Any], ...] = ()


def parse_number(value: Any, *, source: SourceRef, field: str) -> float | None:
  """A frame cell -> float, or None when empty. Raises naming the cell when unparsable."""
  if value is None:
    return None
  if isinstance(value, bool):
    raise AnnotationError("expected a frame number, got a boolean", file=source.file,
                          sheet=source.sheet, row=source.row, field=field, value=value)
  if isinstance(value, (int, float)):
    number = float(value)
  else:
    text = str(value).strip()
    if text == "" or text.lower() in ("nan", "n/a", "na", "-"):
      return None
    try:
      number = float(text)
    except ValueError:
      raise AnnotationError("expected a frame number", file=source.file, sheet=source.sheet,
                            row=source.row, field=field, value=value) from None
  if not math.isfinite(number):
    raise AnnotationError("frame number is not finite", file=source.file, sheet=source.sheet,
                          row=source.row, field=field, value=value)
  return number


def _round(x: float, mode: str, *, source: SourceRef, field: str) -> int:
  nearest = round(x)
  if abs(x - nearest) < _INT_EPS:
    return int(nearest)
  if mode == "half_even":
    return int(round(x))
  if mode == "half_up":
    return int(math.floor(x + 0.5))
  if mode == "floor":
    return int(math.floor(x))
  if mode == "ceil":
    return int(math.ceil(x))
  raise AnnotationError("fractional frame number (rounding policy is 'error')",
                        file=source.file, sheet=source.sheet, row=source.row, field=field, value=x)


def _is_fractional(x: float | None) -> bool:
  return x is not None and abs(x - round(x)) >= _INT_EPS


def resampled_num_frames(num_frames: int, p: "Policies") -> int:
  """Frames of the resampled video: the image of the original last frame under the mapping.

  Every original frame maps inside the resampled video, and clipping at the end reproduces
  SpotFormer's prepared SAMM-LV CSV (its offsets past the end become ``round((N-1)/7)``,
  0-based). The last resampled frame can lie up to d/2 original frames past the end; it shows
  the original last frame (``Video.to_original_frame`` clamps).
  """
  if p.fps_divisor == 1:
    return num_frames
  return _to_frame(float(num_frames), p, source=SourceRef("frame count"), field="frames")


def _to_frame(x: float, p: Policies, *, source: SourceRef, field: str) -> int:
  if p.fps_divisor == 1:
    return _round(x, p.rounding, source=source, field=field)
  return _round((x - 1) / p.fps_divisor, p.rounding, source=source, field=field) + 1


def _finalize_one(row: RawRow, p: Policies, num_frames: int | None,
                  quirks: collections.Counter) -> Interval | None:
  """Applies policies 1-8 to one row; returns None when a policy drops it."""
  src = row.source
  flags: set[str] = set()

  def err(msg, field, value=None):
    return AnnotationError(msg, file=src.file, sheet=src.sheet, row=src.row, field=field,
                           value=value)

  if row.onset is None:
    raise err("onset is empty", "onset")
  raw_onset, raw_apex, raw_offset = row.onset, row.apex, row.offset
  for name, value in (("onset", raw_onset), ("apex", raw_apex), ("offset", raw_offset)):
    if value is not None and value < 0 and not (name == "apex" and value == -1):
      raise err("negative frame number", name, value)
  if any(_is_fractional(v) for v in (raw_onset, raw_apex, raw_offset)):
    flags.add("fractional")
  onset_zero = raw_onset == 0
  offset_missing = raw_offset is None or raw_offset == 0
  apex_missing = raw_apex is None or raw_apex in (0, -1)

  onset = 1 if onset_zero else _to_frame(raw_onset, p, source=src, field="onset")
  offset = None if offset_missing else _to_frame(raw_offset, p, source=src, field="offset")
  apex = None if apex_missing else _to_frame(raw_apex, p, source=src, field="apex")
  if p.fps_divisor != 1:
    flags.add("resampled")

  if onset_zero:
    flags.add("onset_zero")
    if p.onset_zero == "drop":
      return _dropped(quirks, flags)
  if offset is not None and onset > offset:
    raise err(f"onset {row.onset:g} is after offset {row.offset:g}", "offset", row.offset)

  if offset_missing:
    flags.add("missing_offset")
    if p.missing_offset == "drop":
      return _dropped(quirks, flags)
    if apex_missing:
      raise err("both offset and apex are missing; cannot place the interval", "offset",
                row.offset)
    if p.missing_offset == "apex":
      offset = apex
    elif p.missing_offset == "apex_plus_20":
      offset = apex + 20
    if offset is not None and offset < onset:
      raise err(f"missing offset filled from apex {apex} lies before onset {onset}", "apex",
                row.apex)

  if apex_missing:
    flags.add("missing_apex")
    if p.missing_apex == "drop":
      return _dropped(quirks, flags)
    if p.missing_apex == "midpoint":
      apex = (onset + offset) // 2 if offset is not None else onset

  if num_frames is not None:
    last = num_frames
    past = [name for name, v in (("onset", onset), ("apex", apex), ("offset", offset))
            if v is not None and v > last]
    if past:
      flags.add("beyond_end")
      if p.beyond_end == "error":
        raise err(f"{past[0]} is beyond the video's last frame {last}", past[0])
      if p.beyond_end == "drop":
        return _dropped(quirks, flags)
      if p.beyond_end == "clip":
        if onset > last:  # nothing of it lies in the video
          return _dropped(quirks, flags)
        apex = None if apex is None else min(apex, last)
        offset = None if offset is None else min(offset, last)

  if apex is not None and offset is not None and not onset <= apex <= offset:
    flags.add("apex_outside")
    if p.apex_outside == "drop":
      return _dropped(quirks, flags)
    if p.apex_outside == "clip":
      apex = min(max(apex, onset), offset)

  quirks.update(flags)
  return Interval(onset=onset, apex=apex, offset=offset, type=row.type, aus=row.aus,
                  emotion=row.emotion, label_id=row.label_id, source=src,
                  flags=frozenset(flags), extra=row.extra)


def _dropped(quirks: collections.Counter, flags: set[str]) -> None:
  quirks.update(flags)
  quirks["dropped"] += 1
  return None


def finalize_rows(dataset: Dataset, rows: list[RawRow], policies: Policies, *,
                  frame_counts: dict[str, int] | None = None,
                  subject_of: Callable[[str], str | None] | None = None) -> Dataset:
  """Applies the policies to ``rows`` and adds the intervals to ``dataset``.

  Args:
    dataset: the dataset to fill (its ``fps`` is the original rate).
    rows: raw rows in file order.
    policies: the quirk policies.
    frame_counts: original frame count per video name, when known (enables ``beyond_end``).
    subject_of: maps a video name of ``frame_counts`` to its subject, so that videos without
      annotations are listed too; such videos are skipped when it is None or returns None.
  """
  p = policies
  frame_counts = frame_counts or {}
  fps = dataset.fps / p.fps_divisor

  def video_for(subject: str, name: str) -> Video:
    video = dataset.add_video(Video(subject, name, fps, fps_divisor=p.fps_divisor))
    if video.num_frames is None and name in frame_counts:
      video.original_num_frames = frame_counts[name]
      video.num_frames = resampled_num_frames(frame_counts[name], p)
    return video

  for row in rows:
    video = video_for(row.subject, row.video)
    interval = _finalize_one(row, p, video.num_frames, dataset.quirks)
    if interval is not None:
      video.intervals.append(interval)
  if subject_of is not None:
    for name in frame_counts:
      subject = subject_of(name)
      if subject is not None:
        video_for(subject, name)
  _dedupe(dataset, p)
  _nested(dataset, p)
  dataset.sort()
  return dataset


def _dedupe(dataset: Dataset, p: Policies) -> None:
  for video in dataset.videos():
    seen: dict[tuple, Interval] = {}
    ids: dict[str, Interval] = {}
    kept = []
    for iv in video.intervals:
      key = (iv.onset, iv.apex, iv.offset, iv.type)
      if key in seen:
        dataset.quirks["duplicate_row"] += 1
        if p.duplicates == "error":
          raise AnnotationError(f"duplicate of the row at {seen[key].source}",
                                file=iv.source.file, sheet=iv.source.sheet, row=iv.source.row)
        if p.duplicates == "drop":
          dataset.quirks["dropped"] += 1
          continue
      seen[key] = iv
      if iv.label_id is not None:
        if iv.label_id in ids and key != _key(ids[iv.label_id]):
          dataset.quirks["duplicate_id"] += 1
        ids.setdefault(iv.label_id, iv)
      kept.append(iv)
    video.intervals = kept


def _key(iv: Interval) -> tuple:
  return (iv.onset, iv.apex, iv.offset, iv.type)


def _nested(dataset: Dataset, p: Policies) -> None:
  for video in dataset.videos():
    inner, outer = set(), set()
    ivs = video.intervals
    for i, a in enumerate(ivs):
      for j, b in enumerate(ivs):
        if i != j and a.contains(b) and _key(a) != _key(b):  # equal ones: duplicates
          outer.add(i)
          inner.add(j)
    if inner:
      dataset.quirks["nested"] += len(inner)
    drop = inner if p.nested == "drop_inner" else outer if p.nested == "drop_outer" else set()
    if drop:
      dataset.quirks["dropped"] += len(drop)
      video.intervals = [iv for k, iv in enumerate(ivs) if k not in drop]
