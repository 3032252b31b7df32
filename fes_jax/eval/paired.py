"""Paired comparison of two spotting runs on the same ground truth (e.g. two feature types).

Each ground-truth interval is matched against run A's and run B's proposals with the MEGC
conventions (``megc.matched``); per type the intervals found by both, by A only, by B only
and by neither are counted, and the exact two-sided McNemar test on the discordant pairs
(A only vs B only) says how likely a split at least that uneven is if A and B find intervals
equally often. F1 differences also depend on false positives, which this does not pair.
"""

from __future__ import annotations

import math
from typing import Iterable

from fes_jax.eval.megc import TYPES, MegcConventions, Span, groups, matched


def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value: binomial(n = only_a + only_b, 1/2) tails, capped at 1."""
  n = only_a + only_b
  if n == 0:
    return 1.0
  k = max(only_a, only_b)
  tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def compare(gts: Iterable[Span], preds_a: Iterable[Span], preds_b: Iterable[Span],
            conv: MegcConventions = MegcConventions()) -> dict[str, dict[str, float | int]]:
  """Per type: ``both``, ``only_a``, ``only_b``, ``neither`` (ground truths) and ``p``."""
  gts = list(gts)
  found = []
  for preds in (preds_a, preds_b):
    flags = {}
    for key, g, p in groups(gts, preds, conv):
      for i, hit in enumerate(matched(g, p, conv)):
        flags[(key, i)] = hit
    found.append(flags)
  out = {t: {"both": 0, "only_a": 0, "only_b": 0, "neither": 0} for t in TYPES}
  for key, a in found[0].items():
    b = found[1][key]
    out[key[0][1]]["both" if a and b else "only_a" if a else "only_b" if b else "neither"] += 1
  for row in out.values():
    row["p"] = mcnemar_exact(row["only_a"], row["only_b"])
  return out
