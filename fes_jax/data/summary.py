"""Counts and duration statistics of a dataset, as one JSON-ready dict."""

from __future__ import annotations

import statistics
from typing import Any

from fes_jax.data.types import Dataset, ExprType


def _stats(values: list[int]) -> dict[str, Any]:
  if not values:
    return {"count": 0, "min": None, "median": None, "max": None}
  return {"count": len(values), "min": min(values), "median": statistics.median(values),
          "max": max(values)}


def summarize(dataset: Dataset) -> dict[str, Any]:
  """Subjects, videos, MaE / ME counts, durations per type (frames, ``offset - onset + 1``,
  over intervals with an offset), video lengths, and the rows each quirk policy touched."""
  videos = list(dataset.videos())
  by_type = {t: [iv for _, iv in dataset.intervals() if iv.type is t] for t in ExprType}
  lengths = [v.num_frames for v in videos if v.num_frames is not None]
  fps = sorted({round(v.fps, 4) for v in videos}) or [dataset.fps]
  return {
      "dataset": dataset.name,
      "source": dataset.source,
      "fps": fps[0] if len(fps) == 1 else fps,
      "subjects": len(dataset.subjects),
      "videos": len(videos),
      "videos_with_intervals": sum(1 for v in videos if v.intervals),
      "mae": len(by_type[ExprType.MAE]),
      "me": len(by_type[ExprType.ME]),
      "duration_frames": {
          t.value: _stats([iv.length for iv in ivs if iv.length is not None])
          for t, ivs in by_type.items()},
      "video_frames": _stats(lengths),
      "quirks": dict(sorted(dataset.quirks.items())),
  }
