"""Measurements that check a generated dataset is as hard as intended.

``roi_motion`` measures optical-flow motion (Farneback, Zhao et al.'s parameters) in a facial
region between two frames, relative to the nose (the SW-MRO head-motion compensation), as the
90th percentile of the flow magnitude in the region. ``quiet_frames`` lists frames far from
every expression and distractor, where the same measure gives the noise floor.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from fes_jax.synthetic import motion

REGIONS = {"brows": tuple(range(17, 27)), "eyes": tuple(range(36, 48)),
           "mouth": tuple(range(48, 68))}
NOSE = tuple(range(27, 36))


def _region_mask(pts_68x2: np.ndarray, idx: tuple[int, ...], shape_hw: tuple[int, int],
                 grow: int) -> np.ndarray:
  mask = np.zeros(shape_hw, np.uint8)
  hull = cv2.convexHull(np.round(pts_68x2[list(idx)]).astype(np.int32))
  cv2.fillConvexPoly(mask, hull, 1)
  return cv2.dilate(mask, np.ones((grow, grow), np.uint8)) > 0


def roi_motion(gray0: np.ndarray, gray1: np.ndarray, pts_68x2: np.ndarray,
               regions: tuple[str, ...] = tuple(REGIONS)) -> dict[str, float]:
  """90th-percentile flow magnitude (px) per region, nose-compensated, frame 0 -> frame 1.

  Args:
    gray0, gray1: uint8 grey frames.
    pts_68x2: landmarks in frame 0 (ground truth or detected).
  """
  lo = np.maximum(pts_68x2.min(0) - 30, 0).astype(int)
  hi = np.minimum(pts_68x2.max(0) + 30, gray0.shape[::-1]).astype(int)
  a = gray0[lo[1]:hi[1], lo[0]:hi[0]]
  b = gray1[lo[1]:hi[1], lo[0]:hi[0]]
  flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 5, 7, 1.5, 0)
  pts = pts_68x2 - lo
  nose_2 = np.median(flow[_region_mask(pts, NOSE, a.shape, 9)], axis=0)
  out = {}
  for name in regions:
    v = flow[_region_mask(pts, REGIONS[name], a.shape, 15)] - nose_2
    out[name] = float(np.percentile(np.linalg.norm(v, axis=1), 90))
  return out


def expression_regions(aus: list[int]) -> tuple[str, ...]:
  """The regions an AU combination moves: brows+eyes, mouth, or all three."""
  upper = {a in motion.UPPER_FACE_AUS for a in aus}
  if upper == {True}:
    return ("brows", "eyes")
  if upper == {False}:
    return ("mouth",)
  return tuple(REGIONS)


def busy_frames(plan: dict[str, Any], pad: int = 3) -> np.ndarray:
  """``(num_frames + 1,)`` bool, index = 1-based frame: near an expression or distractor."""
  n = plan["num_frames"]
  busy = np.zeros(n + 1, bool)
  spans = [(e["onset"], e["offset"]) for e in plan["intervals"]]
  spans += [(b["start"], b["start"] + b["frames"]) for b in plan["blinks"]]
  spans += [(t["start"], t["start"] + t["hold"] + t["frames"] * (3 if t["returns"] else 1))
            for t in plan["turns"]]
  spans += [(s["start"], s["start"] + s["frames"]) for s in plan["talk"]]
  for a, b in spans:
    busy[max(0, a - pad):min(n, b + pad) + 1] = True
  return busy


def quiet_frames(plan: dict[str, Any], gap: int) -> list[int]:
  """Frames ``f`` such that ``[f, f + gap]`` is free of expressions and distractors."""
  busy = busy_frames(plan)
  n = plan["num_frames"]
  return [f for f in range(1, n - gap + 1) if not busy[f:f + gap + 1].any()]
