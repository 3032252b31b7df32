"""Feature-level probe: how well a linear classifier finds expression apexes on held-out
subjects, from a run's per-video features alone (no network training).

A cheap check that a dataset and a feature setting carry the signal a spotter needs, and a
fast feature ablation (SW-MRO vs adjacent-frame flow, paper Table III direction): for each
type (ME, MaE), windows within ``apex_radius`` frames of an apex are positives, windows more
than ``margin`` frames from every interval are negatives (the rest is ignored). Leave one
subject out: a class-balanced ridge least-squares classifier on standardised flattened
windows is fitted on the other subjects and scores the held-out one; the AUC is computed over
every held-out score pooled.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from fes_jax.data.types import Dataset

TYPES = {"me": 1, "mae": 2}


def window_labels(dataset: Dataset, *, apex_radius: int = 2,
                  margin: int = 10) -> dict[str, tuple[str, np.ndarray]]:
  """``{video: (subject, labels_N)}``: 0 neutral, 1 near an ME apex, 2 near a MaE apex,
  -1 ignored. Frames are 1-based in the annotations, 0-based here."""
  out = {}
  for v in dataset.videos():
    labels_N = np.zeros(v.num_frames, np.int8)
    for iv in v.intervals:
      labels_N[max(0, iv.onset - 1 - margin):iv.offset + margin] = -1
    for iv in v.intervals:
      labels_N[max(0, iv.apex - 1 - apex_radius):iv.apex + apex_radius] = TYPES[iv.type.value]
    out[v.name] = (v.subject, labels_N)
  return out


def auc(scores_N: np.ndarray, positive_N: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney U; ties broken by order)."""
  pos = positive_N.astype(bool)
  if pos.all() or not pos.any():
    return float("nan")
  ranks = np.empty(len(scores_N))
  ranks[np.argsort(scores_N, kind="stable")] = np.arange(1, len(scores_N) + 1)
  n_pos, n_neg = pos.sum(), (~pos).sum()
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fit(x_NxD: np.ndarray, y_N: np.ndarray, ridge: float) -> np.ndarray:
  weight_N = np.where(y_N == 1, 0.5 / y_N.mean(), 0.5 / (1 - y_N.mean()))
  a_DxD = (x_NxD * weight_N[:, None]).T @ x_NxD + ridge * np.eye(x_NxD.shape[1])
  return np.linalg.solve(a_DxD, (x_NxD * weight_N[:, None]).T @ (2 * y_N - 1))


def probe(features: Mapping[str, np.ndarray], labels: Mapping[str, tuple[str, np.ndarray]], *,
          ridge: float = 10.0) -> dict[str, dict[str, float]]:
  """LOSO AUC per type. ``features[video]`` is (N, ...) per frame (e.g. (N, w, R, 2))."""
  subjects = sorted({s for s, _ in labels.values()})
  out = {}
  for name, cls in TYPES.items():
    scores, truth = [], []
    for held in subjects:
      parts = {True: ([], []), False: ([], [])}
      for video, (subject, labels_N) in labels.items():
        keep = (labels_N == 0) | (labels_N == cls)
        x = np.asarray(features[video], np.float64)[keep].reshape(int(keep.sum()), -1)
        parts[subject != held][0].append(x)
        parts[subject != held][1].append((labels_N[keep] == cls).astype(np.float64))
      x_tr, y_tr = np.concatenate(parts[True][0]), np.concatenate(parts[True][1])
      x_te, y_te = np.concatenate(parts[False][0]), np.concatenate(parts[False][1])
      if not y_te.any() or not y_tr.any() or y_tr.all():
        continue
      mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
      w = _fit((x_tr - mean) / std, y_tr, ridge)
      scores.append((x_te - mean) / std @ w)
      truth.append(y_te)
    if not scores:
      out[name] = {"auc": float("nan"), "positives": 0, "negatives": 0}
      continue
    s, y = np.concatenate(scores), np.concatenate(truth)
    out[name] = {"auc": round(auc(s, y), 4), "positives": int(y.sum()),
                 "negatives": int((1 - y).sum())}
  return out
