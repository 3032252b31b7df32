"""FESNet's frame-level metrics (paper section 4.2): frame accuracy and segmental edit score.

Labels per frame are 0 neutral, 1 MaE, 2 ME. The edit score (MS-TCN) is
``(1 - Levenshtein(segments(pred), segments(gt)) / max(len)) * 100`` over the run-length
segment label sequences, so it rewards the right order of segments, not their timing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def frame_accuracy(pred_N: np.ndarray, gt_N: np.ndarray) -> float:
  pred_N, gt_N = np.asarray(pred_N), np.asarray(gt_N)
  if pred_N.shape != gt_N.shape or pred_N.ndim != 1:
    raise ValueError(f"need two equal 1-D label sequences, got {pred_N.shape}, {gt_N.shape}")
  return float((pred_N == gt_N).mean()) if len(gt_N) else 0.0


def segments(labels: Sequence[int]) -> list[int]:
  """Run-length segment labels: [0, 0, 1, 1, 0] -> [0, 1, 0]."""
  out: list[int] = []
  for x in labels:
    if not out or out[-1] != x:
      out.append(int(x))
  return out


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i] + [0] * len(b)
    for j, y in enumerate(b, 1):
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
    prev = cur
  return prev[-1]


def edit_score(pred_N: Sequence[int], gt_N: Sequence[int]) -> float:
  p, g = segments(pred_N), segments(gt_N)
  if not p and not g:
    return 100.0
  return (1 - levenshtein(p, g) / max(len(p), len(g))) * 100


def intervals_to_frames(spans, num_frames: int) -> np.ndarray:
  """Per-frame labels (0 neutral, 1 MaE, 2 ME; ME drawn last) from 1-based inclusive spans."""
  out = np.zeros(num_frames, np.int32)
  for kind, code in (("mae", 1), ("me", 2)):
    for s in spans:
      if s.type == kind and s.offset is not None:
        out[max(s.onset, 1) - 1:min(s.offset, num_frames)] = code
  return out
