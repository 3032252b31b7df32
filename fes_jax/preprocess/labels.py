"""Per-frame training targets of a video (reference section 4; the authors' ``datasets.py``).

Frames are 1-based (``fes_jax.data.types``); array index ``i`` holds frame ``i + 1``.

Two forms, one derived from the other:

* ``indicators_Nx8`` (float32, 0/1), the reference's stored label layout, one column each:

  ====  ==============  ================================================================
  col   name            1 on ...
  ====  ==============  ================================================================
  0     ``me_onset``    the onset frame of every ME
  1     ``me_apex``     the apex frame of every ME with an apex
  2     ``me_offset``   the offset frame of every ME with an offset
  3     ``me_expr``     every frame of every ME, onset..offset inclusive
  4-7   ``mae_*``       the same for MaE
  ====  ==============  ================================================================

* the targets the losses consume, computed from the indicators only
  (:func:`targets_from_indicators`):

  - ``me_onoff`` / ``mae_onoff`` (int32): 0 onset, 1 offset, 2 none. Every frame within
    ``r`` of an onset indicator gets 0, then every frame within ``r`` of an offset indicator
    gets 1 (offsets are written last and win overlaps); r = 1 for ME, 3 for MaE.
  - ``me_apex`` / ``mae_apex`` (float32): 1 on an apex, ``exp(-j^2/32)`` at distance
    j = 1..r (the code's ``norm(0, 4).pdf(j) / pdf(0)``). Where neighbourhoods of two apexes
    of the same type overlap, the **maximum** is kept (the reference code lets the
    later apex overwrite, which can even replace another apex's 1; the spec does not say).
  - ``me_expr`` / ``mae_expr`` (float32): the expression columns (3 and 7) as they are.
  - ``cls`` (int32): contrastive class 0 neutral, 1 MaE, 2 ME; MaE wins where both overlap.

Choices where the reference is silent or differs:

* The reference code derives targets inside each 16-frame segment, so an onset's +-r spread
  stops at segment borders (and its apex spread never reaches a segment's first frame, an
  off-by-one ``index - j > 0``). Here targets are derived over the whole video and clipped
  only at the video's edges, as the spec reads.
* An interval with ``offset=None`` (the ``unmatchable`` missing-offset policy) gets no offset
  indicator (so no offset target), and its expression span is onset..apex (the frames known
  to be expressive; onset alone if it also lacks an apex). An interval with ``apex=None``
  gets no apex indicator.
* Interval frames outside 1..N (only possible under ``beyond_end=keep``) are clamped into the
  video first; an interval lying wholly outside is ignored.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fes_jax.data.types import ExprType, Interval, Video

ONSET, OFFSET, NONE = 0, 1, 2  # onset/offset classes (model channels 0-2 / 3-5)
NEUTRAL, MAE_CLASS, ME_CLASS = 0, 1, 2  # contrastive classes
RADIUS = {ExprType.ME: 1, ExprType.MAE: 3}  # +-r of onset/offset/apex targets
APEX_SCALE = 4.0  # exp(-j^2 / (2 * 4^2)) = exp(-j^2 / 32)
COLUMNS = ("me_onset", "me_apex", "me_offset", "me_expr",
           "mae_onset", "mae_apex", "mae_offset", "mae_expr")
_FIRST_COLUMN = {ExprType.ME: 0, ExprType.MAE: 4}  # + 0 onset, 1 apex, 2 offset, 3 expr


@dataclasses.dataclass(frozen=True)
class FrameLabels:
  """Targets of N frames (or of any selection of them, see :meth:`take`)."""

  me_onoff: np.ndarray  # (N,) int32
  me_apex: np.ndarray  # (N,) float32
  me_expr: np.ndarray  # (N,) float32
  mae_onoff: np.ndarray  # (N,) int32
  mae_apex: np.ndarray  # (N,) float32
  mae_expr: np.ndarray  # (N,) float32
  cls: np.ndarray  # (N,) int32
  indicators_Nx8: np.ndarray  # (N, 8) float32, columns ``COLUMNS``

  @property
  def num_frames(self) -> int:
    return int(self.cls.shape[0])

  def as_dict(self) -> dict[str, np.ndarray]:
    """All fields by name; ``labels`` is the packed (N, 8) indicator array."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["labels"] = out.pop("indicators_Nx8")
    return out

  def take(self, rows: np.ndarray) -> "FrameLabels":
    """The labels of the given 0-based rows (e.g. ``frame_numbers - 1``)."""
    return FrameLabels(**{f.name: getattr(self, f.name)[rows]
                          for f in dataclasses.fields(self)})


def clamp_interval(interval: Interval, num_frames: int
                   ) -> tuple[int, int | None, int | None] | None:
  """``(onset, apex, offset)`` clamped to 1..num_frames; None when wholly outside."""
  last = interval.offset if interval.offset is not None else (
      interval.apex if interval.apex is not None else interval.onset)
  if interval.onset > num_frames or last < 1:
    return None

  def clamp(frame: int | None) -> int | None:
    return None if frame is None else min(max(frame, 1), num_frames)

  return clamp(interval.onset), clamp(interval.apex), clamp(interval.offset)


def indicators(intervals: list[Interval], num_frames: int) -> np.ndarray:
  """The (N, 8) 0/1 indicator array of the module docstring."""
  out_Nx8 = np.zeros((num_frames, len(COLUMNS)), np.float32)
  for interval in intervals:
    frames = clamp_interval(interval, num_frames)
    if frames is None:
      continue
    onset, apex, offset = frames
    col = _FIRST_COLUMN[interval.type]
    out_Nx8[onset - 1, col] = 1.0
    if apex is not None:
      out_Nx8[apex - 1, col + 1] = 1.0
    if offset is not None:
      out_Nx8[offset - 1, col + 2] = 1.0
    expr_end = offset if offset is not None else (apex if apex is not None else onset)
    out_Nx8[onset - 1:expr_end, col + 3] = 1.0
  return out_Nx8


def _dilate(marks_N: np.ndarray, radius: int) -> np.ndarray:
  """True on every index within ``radius`` of a nonzero entry of ``marks_N``."""
  out_N = np.zeros(marks_N.shape, bool)
  for i in np.flatnonzero(marks_N):
    out_N[max(i - radius, 0):i + radius + 1] = True
  return out_N


def onoff_targets(onset_N: np.ndarray, offset_N: np.ndarray, radius: int) -> np.ndarray:
  """3-class targets from onset/offset indicators; offsets written last (win overlaps)."""
  out_N = np.full(onset_N.shape, NONE, np.int32)
  out_N[_dilate(onset_N, radius)] = ONSET
  out_N[_dilate(offset_N, radius)] = OFFSET
  return out_N


def apex_targets(apex_N: np.ndarray, radius: int) -> np.ndarray:
  """Soft apex targets: max over apexes of ``exp(-j^2/32)`` for distance j <= radius."""
  out_N = np.zeros(apex_N.shape, np.float64)
  n = apex_N.shape[0]
  for i in np.flatnonzero(apex_N):
    for j in range(-radius, radius + 1):
      if 0 <= i + j < n:
        value = np.exp(-(j * j) / (2.0 * APEX_SCALE ** 2))
        out_N[i + j] = max(out_N[i + j], value)
  return out_N.astype(np.float32)


def contrastive_classes(me_expr_N: np.ndarray, mae_expr_N: np.ndarray) -> np.ndarray:
  """0 neutral, 2 on ME frames, then 1 on MaE frames (MaE wins overlaps)."""
  out_N = np.full(me_expr_N.shape, NEUTRAL, np.int32)
  out_N[me_expr_N > 0] = ME_CLASS
  out_N[mae_expr_N > 0] = MAE_CLASS
  return out_N


def targets_from_indicators(indicators_Nx8: np.ndarray) -> FrameLabels:
  """All targets of the module docstring from the (N, 8) indicators."""
  ind = np.asarray(indicators_Nx8, np.float32)
  if ind.ndim != 2 or ind.shape[1] != len(COLUMNS):
    raise ValueError(f"indicators must be (N, {len(COLUMNS)}), got {ind.shape}")
  fields = {}
  for prefix, expr_type in (("me", ExprType.ME), ("mae", ExprType.MAE)):
    col, r = _FIRST_COLUMN[expr_type], RADIUS[expr_type]
    fields[f"{prefix}_onoff"] = onoff_targets(ind[:, col], ind[:, col + 2], r)
    fields[f"{prefix}_apex"] = apex_targets(ind[:, col + 1], r)
    fields[f"{prefix}_expr"] = ind[:, col + 3].copy()
  return FrameLabels(cls=contrastive_classes(fields["me_expr"], fields["mae_expr"]),
                     indicators_Nx8=ind, **fields)


def frame_labels(video: Video, num_frames: int | None = None) -> FrameLabels:
  """The targets of frames 1..N of ``video``.

  Args:
    video: the video; its intervals are at its own frame numbering.
    num_frames: N; defaults to ``video.num_frames``. When both are given they must agree.

  Raises:
    ValueError: N is unknown, or disagrees with ``video.num_frames``.
  """
  n = video.num_frames if num_frames is None else num_frames
  if n is None:
    raise ValueError(f"video {video.name!r} has no frame count; pass num_frames")
  if video.num_frames is not None and video.num_frames != n:
    raise ValueError(f"video {video.name!r} has {video.num_frames} frames, "
                     f"but {n} were asked for")
  if n < 1:
    raise ValueError(f"video {video.name!r}: num_frames must be positive, got {n}")
  return targets_from_indicators(indicators(video.intervals, n))
