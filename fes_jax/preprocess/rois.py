"""Face box, flow regions and ROIs on dlib's 68 landmarks (../shared/reference/rois.md).

Zhao et al.'s layout, which SpotFormer's graph nodes point at. All boxes live on the resized
face (``face_size`` px square); Zhao's constants are given for a 256-px face and are scaled by
``face_size / 256``. Landmarks are 0-based dlib indices; "L" means image-left.

Boxes are ``(x0, y0, x1, y1)`` float, half-open, in face pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Face box around the inner eye corners (lm 39, 42), d = int((x42 - x39) / 2), in units of d:
# (up, down, half width). CAS(ME)^2: rows [cy-3d, cy+5d], cols [cx-4d, cx+4d]; SAMM: 9d.
FACE_BOXES = {"casme2": (3.0, 5.0, 4.0), "samm": (3.5, 5.5, 4.5)}

# Flow regions: landmark range and extension (x_lo, x_hi, y_lo, y_hi) in 256-px face pixels.
REGIONS = {
    "brow_l": (range(17, 22), (-5, 0, -15, 5)),
    "brow_r": (range(22, 27), (0, 0, -15, 5)),
    "mouth": (range(48, 67), (-20, 20, -15, 10)),
    "nose": (range(30, 36), (-30, 30, -20, 5)),
}


@dataclasses.dataclass(frozen=True)
class Roi:
  name: str
  region: str
  landmark: int | None  # centre landmark, or None for the eyelid boxes
  box: tuple[float, float, float, float]  # (dx0, dx1, dy0, dy1) around the landmark
  top_p: float  # Zhao's top-magnitude fraction for this ROI


def _pt(name, region, lm, dx0, dx1, dy0, dy1, p):
  return Roi(name, region, lm, (dx0, dx1, dy0, dy1), p)


# Zhao's ROI channels without the three whole-region ones (15 ROIs). SpotFormer's 10 graph
# nodes are the first 10, in its order: L-brow lm 20, 19, 18; R-brow lm 23, 24, 25;
# mouth lm 48, 54, 51, 57 (nodes 0-2, 3-5, 6-9 form the three facial parts).
ROIS_15 = (
    _pt("brow_l_20", "brow_l", 20, -10, 10, -10, 10, 0.2),
    _pt("brow_l_19", "brow_l", 19, -10, 10, -10, 10, 0.2),
    _pt("brow_l_18", "brow_l", 18, -10, 10, -10, 10, 0.2),
    _pt("brow_r_23", "brow_r", 23, -10, 10, -10, 10, 0.3),
    _pt("brow_r_24", "brow_r", 24, -10, 10, -10, 10, 0.3),
    _pt("brow_r_25", "brow_r", 25, -10, 10, -10, 10, 0.3),
    _pt("mouth_48", "mouth", 48, -10, 20, -10, 10, 0.2),
    _pt("mouth_54", "mouth", 54, -20, 10, -10, 10, 0.2),
    _pt("mouth_51", "mouth", 51, -10, 10, -10, 10, 0.2),
    _pt("mouth_57", "mouth", 57, -10, 10, -10, 10, 0.2),
    _pt("mouth_62", "mouth", 62, -10, 10, -10, 10, 0.2),
    _pt("nose_31", "nose", 31, -20, 10, -20, 5, 0.2),
    _pt("nose_35", "nose", 35, -10, 20, -20, 5, 0.2),
    Roi("eyelid_l", "eyelid_l", None, (0, 0, 0, 0), 0.3),
    Roi("eyelid_r", "eyelid_r", None, (0, 0, 0, 0), 0.3),
)
ROI_SETS = {"nodes10": ROIS_15[:10], "zhao15": ROIS_15}
NOSE_TIP_MARGIN = 13  # px (256-px face) around the bbox of lm 29-30
NOSE_TIP_TOP_P = 0.7


def face_box(lm_68x2: np.ndarray, kind: str = "casme2") -> tuple[float, float, float]:
  """Square face box ``(x0, y0, side)`` in image pixels from the inner eye corners."""
  up, down, half = FACE_BOXES[kind]
  x39, y39 = lm_68x2[39]
  x42, y42 = lm_68x2[42]
  d = int((x42 - x39) / 2)
  if d <= 0:
    raise ValueError(f"degenerate landmarks: inner eye corners x39={x39:.1f}, x42={x42:.1f}")
  cx, cy = (x39 + x42) / 2, (y39 + y42) / 2
  return float(cx - half * d), float(cy - up * d), float((up + down) * d)


def to_face(lm_68x2: np.ndarray, box: tuple[float, float, float], face_size: int) -> np.ndarray:
  """Landmarks in image pixels -> pixels of the resized face crop."""
  x0, y0, side = box
  return (lm_68x2 - np.array([x0, y0])) * (face_size / side)


def _clip(box, face_size):
  """Integer bounds of a box in face pixels.

  Regions are sampled from the image itself (fes_jax.preprocess.sw_mro.crop), so a region
  may reach past the face crop (a low mouth, a tilted face) without losing content; it is
  not clipped to the crop. ``face_size`` only scales the minimum size check.
  """
  x0, y0, x1, y1 = box
  if x1 - x0 < 2 or y1 - y0 < 2:
    raise ValueError(f"box {box} is degenerate on the {face_size}-px face")
  return (float(np.floor(x0)), float(np.floor(y0)), float(np.ceil(x1)), float(np.ceil(y1)))


def region_boxes(lm_face: np.ndarray, face_size: int) -> dict[str, tuple]:
  """Flow regions (brows, mouth, nose sides, eyelids, nose tip) on the face crop."""
  s = face_size / 256
  boxes = {}
  for name, (idx, (xl, xh, yl, yh)) in REGIONS.items():
    pts = lm_face[list(idx)]
    boxes[name] = _clip((pts[:, 0].min() + xl * s, pts[:, 1].min() + yl * s,
                         pts[:, 0].max() + xh * s, pts[:, 1].max() + yh * s), face_size)
  for name, idx in (("eyelid_l", range(36, 42)), ("eyelid_r", range(42, 48))):
    pts = lm_face[list(idx)]
    w = pts[:, 0].max() - pts[:, 0].min()
    ymid = (pts[:, 1].max() + pts[:, 1].min()) / 2
    boxes[name] = _clip((pts[:, 0].min(), ymid + w / 4, pts[:, 0].max(), ymid + 3 * w / 4),
                        face_size)
  tip = lm_face[[29, 30]]
  m = NOSE_TIP_MARGIN * s
  boxes["nose_tip"] = _clip((tip[:, 0].min() - m, tip[:, 1].min() - m, tip[:, 0].max() + m,
                             tip[:, 1].max() + m), face_size)
  return boxes


def roi_boxes(lm_face: np.ndarray, rois: tuple[Roi, ...], regions: dict[str, tuple],
              face_size: int) -> list[tuple]:
  """Each ROI's box on the face crop (clipped to its region, whose flow it is cut from)."""
  s = face_size / 256
  out = []
  for roi in rois:
    rx0, ry0, rx1, ry1 = regions[roi.region]
    if roi.landmark is None:
      out.append((rx0, ry0, rx1, ry1))
      continue
    x, y = lm_face[roi.landmark]
    dx0, dx1, dy0, dy1 = roi.box
    box = (max(rx0, x + dx0 * s), max(ry0, y + dy0 * s), min(rx1, x + dx1 * s),
           min(ry1, y + dy1 * s))
    out.append(_clip(box, face_size))
  return out
