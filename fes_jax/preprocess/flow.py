"""Optical flow and the per-ROI reductions of a flow field to one (dx, dy) vector.

``mdmo`` (the paper's cited main-directional mean optical flow, Liu et al.): 8 direction bins
of 45 degrees, the bin holding the most vectors, the mean of its vectors. ``top_magnitude``
(Zhao et al.'s code): the plain mean of the largest-magnitude fraction ``p`` of vectors.
``four_bin`` (AUW-GCN): 4 unequal bins [30,150), [150,210), [210,330), [330,30) degrees, the
bin holding the most vectors, its top 60 % by magnitude, unit(sum) x mean magnitude.
Angles follow ``cv2.cartToPolar`` (image y points down). Ties between bins go to the lowest bin.
"""

from __future__ import annotations

import dataclasses

import numpy as np

REDUCTIONS = ("mdmo", "top_magnitude", "four_bin")
FLOW_METHODS = ("farneback", "dis")


@dataclasses.dataclass(frozen=True)
class FarnebackParams:
  """cv2.calcOpticalFlowFarneback parameters; defaults are Zhao et al.'s."""

  pyr_scale: float = 0.5
  levels: int = 3
  winsize: int = 15
  iterations: int = 5
  poly_n: int = 7
  poly_sigma: float = 1.5


def farneback(prev_HxW: np.ndarray, next_HxW: np.ndarray,
              params: FarnebackParams = FarnebackParams()) -> np.ndarray:
  """Dense flow (H, W, 2) float32 from ``prev`` to ``next`` (uint8 grayscale)."""
  import cv2  # pylint: disable=import-outside-toplevel

  return cv2.calcOpticalFlowFarneback(prev_HxW, next_HxW, None, params.pyr_scale,
                                      params.levels, params.winsize, params.iterations,
                                      params.poly_n, params.poly_sigma, 0)


_DIS = {}


def dis(prev_HxW: np.ndarray, next_HxW: np.ndarray) -> np.ndarray:
  """Dense flow (H, W, 2) by OpenCV's DIS (preset MEDIUM): about 9x faster than Farneback on
  the region crops, with different numbers; fes_jax's fast mode (the deviation is measured by
  tools/benchmark_preprocess.py)."""
  import cv2  # pylint: disable=import-outside-toplevel

  if "medium" not in _DIS:
    _DIS["medium"] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  return _DIS["medium"].calc(prev_HxW, next_HxW, None)


def compute_flow(prev_HxW: np.ndarray, next_HxW: np.ndarray, method: str,
                 params: FarnebackParams) -> np.ndarray:
  if method == "farneback":
    return farneback(prev_HxW, next_HxW, params)
  if method == "dis":
    return dis(prev_HxW, next_HxW)
  raise ValueError(f"unknown flow method {method!r}; known: {FLOW_METHODS}")


def _angles_deg(v_Kx2: np.ndarray) -> np.ndarray:
  ang = np.degrees(np.arctan2(v_Kx2[:, 1], v_Kx2[:, 0]))
  return np.mod(ang, 360.0)


def _magnitudes(v_Kx2: np.ndarray) -> np.ndarray:
  return np.sqrt(v_Kx2[:, 0] ** 2 + v_Kx2[:, 1] ** 2)


def mdmo(v_Kx2: np.ndarray) -> np.ndarray:
  """Mean of the vectors in the most populated of 8 equal direction bins."""
  bins = np.minimum((_angles_deg(v_Kx2) // 45.0).astype(np.int64), 7)
  counts = np.bincount(bins, minlength=8)
  return v_Kx2[bins == int(np.argmax(counts))].mean(axis=0)


def top_magnitude(v_Kx2: np.ndarray, p: float) -> np.ndarray:
  """Plain mean of the ``ceil(p * K)`` largest-magnitude vectors (Zhao et al.)."""
  k = max(1, int(np.ceil(p * len(v_Kx2))))
  order = np.argsort(-_magnitudes(v_Kx2), kind="stable")
  return v_Kx2[order[:k]].mean(axis=0)


def four_bin(v_Kx2: np.ndarray, keep: float = 0.6) -> np.ndarray:
  """AUW-GCN's main-direction flow with 4 unequal bins, top 60 %, unit(sum) x mean norm."""
  ang = _angles_deg(v_Kx2)
  bins = np.where((ang >= 30) & (ang < 150), 0,
                  np.where((ang >= 150) & (ang < 210), 1,
                           np.where((ang >= 210) & (ang < 330), 2, 3)))
  chosen = v_Kx2[bins == int(np.argmax(np.bincount(bins, minlength=4)))]
  mags = _magnitudes(chosen)
  k = max(1, int(np.ceil(keep * len(chosen))))
  order = np.argsort(-mags, kind="stable")[:k]
  kept, kept_mag = chosen[order], mags[order]
  total = kept.sum(axis=0)
  norm = float(np.sqrt((total ** 2).sum()))
  if norm == 0.0:
    return np.zeros(2, np.float32)
  return (total / norm * kept_mag.mean()).astype(np.float32)


def reduce_flow(flow_HxWx2: np.ndarray, method: str, top_p: float = 0.2) -> np.ndarray:
  """One ROI's flow field -> (dx, dy) float32 by the named reduction."""
  v = flow_HxWx2.reshape(-1, 2).astype(np.float64)
  if not len(v):
    raise ValueError("empty ROI")
  if method == "mdmo":
    out = mdmo(v)
  elif method == "top_magnitude":
    out = top_magnitude(v, top_p)
  elif method == "four_bin":
    out = four_bin(v)
  else:
    raise ValueError(f"unknown ROI flow reduction {method!r}; known: {REDUCTIONS}")
  return np.asarray(out, np.float32)
