"""MEGC spotting evaluation (../shared/reference/evaluation.md), every convention an option.

A proposal (onset, offset, type) is a true positive when its IoU with a ground-truth interval
of the same type reaches the threshold; each ground truth and each proposal is matched at most
once. TP, FP and FN are summed over all videos (and folds) per type and overall; precision,
recall and F1 = 2TP / (2TP + FP + FN) come from the sums.

Conventions (``MegcConventions``; defaults follow SpotFormer's code, the paper under study):
- ``length``: ``exclusive`` (end - start, SpotFormer / ABPN / AUW-GCN; default) or
  ``inclusive`` (end - start + 1 frames, the MEGC2020 baseline, LGSNet, STRS).
- ``threshold_op``: ``>=`` (MEGC, SpotFormer, LGSNet; default) or ``>`` (AUW-GCN).
- ``matching``: ``greedy`` (ground truths in order, each takes the best remaining proposal,
  SpotFormer; default) or ``optimal`` (a maximum one-to-one matching: the fair alternative).
- ``type_from``: ``classifier`` (the proposal's own type; default) or ``length`` (the MEGC2020
  baseline: CAS ME 7-16 frames, MaE >= 17 frames; give ``me_range``/``mae_min`` for others).
Ground truths with no offset (the ``unmatchable`` missing-offset policy) count as FN only.
Frames are 1-based on both sides; index shifts belong to the readers and the CSV writer.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

TYPES = ("mae", "me")


@dataclasses.dataclass(frozen=True)
class MegcConventions:
  iou_threshold: float = 0.5
  length: str = "exclusive"
  threshold_op: str = ">="
  matching: str = "greedy"
  type_from: str = "classifier"
  me_range: tuple[int, int] = (7, 16)  # inclusive frames, type_from='length'
  mae_min: int = 17

  def __post_init__(self):
    for name, allowed in (("length", ("exclusive", "inclusive")), ("threshold_op", (">=", ">")),
                          ("matching", ("greedy", "optimal")),
                          ("type_from", ("classifier", "length"))):
      if getattr(self, name) not in allowed:
        raise ValueError(f"MEGC convention {name}={getattr(self, name)!r} not in {allowed}")


@dataclasses.dataclass(frozen=True)
class Span:
  """An interval of one video: 1-based frames, ``offset`` None for unmatchable ground truth."""

  video: str
  onset: int
  offset: int | None
  type: str  # 'mae' | 'me'
  score: float = 1.0


def iou(a: Span, b: Span, length: str = "exclusive") -> float:
  if a.offset is None or b.offset is None:
    return 0.0
  extra = 1 if length == "inclusive" else 0
  inter = min(a.offset, b.offset) - max(a.onset, b.onset) + extra
  if inter <= 0:
    return 0.0
  union = (a.offset - a.onset + extra) + (b.offset - b.onset + extra) - inter
  return inter / union if union > 0 else 0.0


def _passes(value: float, conv: MegcConventions) -> bool:
  return value >= conv.iou_threshold if conv.threshold_op == ">=" else value > conv.iou_threshold


def retype_by_length(p: Span, conv: MegcConventions) -> Span | None:
  """MEGC2020 baseline typing: ME if its inclusive length is within ``me_range``, MaE if at
  least ``mae_min``; shorter proposals are discarded (None)."""
  n = p.offset - p.onset + 1
  if conv.me_range[0] <= n <= conv.me_range[1]:
    return dataclasses.replace(p, type="me")
  if n >= conv.mae_min:
    return dataclasses.replace(p, type="mae")
  return None


def match(gts: Sequence[Span], preds: Sequence[Span], conv: MegcConventions) -> int:
  """Number of one-to-one matches (TP) between same-type intervals of one video."""
  return sum(matched(gts, preds, conv))


def matched(gts: Sequence[Span], preds: Sequence[Span], conv: MegcConventions) -> list[bool]:
  """Per ground truth (in the given order), whether the matching gives it a proposal."""
  ok = [[_passes(iou(g, p, conv.length), conv) for p in preds] for g in gts]
  if conv.matching == "greedy":
    used: set[int] = set()
    out = []
    for gi, g in enumerate(gts):
      best, best_iou = None, -1.0
      for pi, p in enumerate(preds):
        if pi in used or not ok[gi][pi]:
          continue
        v = iou(g, p, conv.length)
        if v > best_iou:
          best, best_iou = pi, v
      if best is not None:
        used.add(best)
      out.append(best is not None)
    return out
  owners = set(_max_bipartite(ok).values())
  return [g in owners for g in range(len(gts))]


def _max_bipartite(ok: list[list[bool]]) -> dict[int, int]:
  """Maximum matching (augmenting paths; videos have few intervals): proposal -> ground truth."""
  owner: dict[int, int] = {}

  def augment(g: int, seen: set[int]) -> bool:
    for p, allowed in enumerate(ok[g]):
      if allowed and p not in seen:
        seen.add(p)
        if p not in owner or augment(owner[p], seen):
          owner[p] = g
          return True
    return False

  for g in range(len(ok)):
    augment(g, set())
  return owner


def prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
  p = tp / (tp + fp) if tp + fp else 0.0
  r = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
  return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}


def groups(gts: Iterable[Span], preds: Iterable[Span], conv: MegcConventions
           ) -> list[tuple[tuple[str, str], list[Span], list[Span]]]:
  """``((video, type), ground truths sorted by onset, proposals)`` per video and type, in a
  fixed order; proposals retyped first when ``conv.type_from == 'length'``."""
  preds = list(preds)
  if conv.type_from == "length":
    preds = [q for q in (retype_by_length(p, conv) for p in preds) if q is not None]
  by: dict[tuple[str, str], tuple[list[Span], list[Span]]] = {}
  for g in gts:
    by.setdefault((g.video, g.type), ([], []))[0].append(g)
  for p in preds:
    by.setdefault((p.video, p.type), ([], []))[1].append(p)
  out = []
  for key, (g, p) in sorted(by.items()):
    if key[1] not in TYPES:
      raise ValueError(f"unknown interval type {key[1]!r}; expected {TYPES}")
    out.append((key, sorted(g, key=lambda s: (s.onset, s.offset or 0)), p))
  return out


def counts(gts: Iterable[Span], preds: Iterable[Span],
           conv: MegcConventions = MegcConventions()) -> dict[str, dict[str, int]]:
  """TP / FP / FN per type over all videos (no ratios: sum these over folds first)."""
  out = {t: {"tp": 0, "fp": 0, "fn": 0} for t in TYPES}
  for (_, t), g, p in groups(gts, preds, conv):
    tp = match(g, p, conv)
    out[t]["tp"] += tp
    out[t]["fp"] += len(p) - tp
    out[t]["fn"] += len(g) - tp
  return out


def add_counts(*parts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
  out = {t: {"tp": 0, "fp": 0, "fn": 0} for t in TYPES}
  for part in parts:
    for t in TYPES:
      for k in out[t]:
        out[t][k] += part[t][k]
  return out


def scores(c: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float | int]]:
  """Precision / recall / F1 per type and overall (MaE + ME) from summed counts."""
  out = {t: prf(c[t]["tp"], c[t]["fp"], c[t]["fn"]) for t in TYPES}
  out["overall"] = prf(*(sum(c[t][k] for t in TYPES) for k in ("tp", "fp", "fn")))
  return out
