"""The base face (scikit-image's astronaut photograph) and the 68-point landmark conventions."""

from __future__ import annotations

import functools

import cv2
import numpy as np

# dlib's 68 landmarks of ``skimage.data.astronaut()`` (x, y pixels): the mean of
# ``DlibLandmarker(detect_scale=1).detect`` on the photo upscaled 2, 3, 4 and 5 times
# (bicubic), mapped back to photo pixels (dlib returns integer points; averaging over scales
# gives about 1/4 px precision). tests/test_synthetic.py re-detects and compares.
ASTRONAUT_PTS_68x2 = np.array([
    [179.29, 104.16], [179.60, 115.91], [180.54, 127.28], [181.86, 138.71], [184.79, 150.02],
    [191.16, 160.23], [199.79, 168.42], [209.05, 175.74], [220.18, 178.23], [231.74, 176.86],
    [242.71, 171.09], [252.83, 163.49], [260.11, 153.91], [264.79, 142.85], [267.71, 131.16],
    [270.23, 119.91], [271.77, 107.68], [186.11, 93.89], [191.97, 88.21], [200.40, 86.97],
    [208.77, 88.71], [216.33, 92.51], [235.87, 93.51], [243.81, 90.66], [252.08, 90.41],
    [260.02, 92.23], [265.13, 98.44], [225.77, 102.23], [225.53, 110.66], [225.34, 118.66],
    [225.09, 127.23], [214.29, 131.09], [219.16, 132.34], [223.97, 134.23], [229.34, 132.91],
    [234.15, 131.77], [194.91, 101.09], [200.29, 97.71], [206.81, 98.34], [212.34, 103.71],
    [206.29, 104.23], [199.54, 103.71], [237.34, 105.14], [243.34, 100.34], [249.77, 100.34],
    [255.09, 104.23], [249.97, 106.29], [243.66, 106.09], [200.13, 138.95], [208.87, 139.13],
    [217.49, 139.34], [223.23, 140.86], [229.34, 139.86], [237.34, 139.97], [245.60, 140.55],
    [237.28, 150.86], [228.71, 154.92], [222.03, 155.66], [215.86, 154.54], [207.45, 149.49],
    [203.01, 140.19], [217.14, 142.98], [222.91, 143.98], [229.23, 143.29], [242.46, 141.72],
    [228.91, 149.72], [222.60, 150.29], [216.61, 149.29],
], np.float64)

# Landmark groups (dlib / iBUG 68-point indices).
JAW = tuple(range(0, 17))
BROW_R, BROW_L = tuple(range(17, 22)), tuple(range(22, 27))  # subject's right = image left
NOSE_BRIDGE, NOSTRILS = tuple(range(27, 31)), tuple(range(31, 36))
EYE_R, EYE_L = tuple(range(36, 42)), tuple(range(42, 48))
MOUTH_OUTER, MOUTH_INNER = tuple(range(48, 60)), tuple(range(60, 68))
NOSE_TIP = 30

# Index of each landmark's mirror image under a horizontal flip.
MIRROR_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])

# Heuristic depth of each landmark towards the camera, in units of the face height, used for
# the pseudo-3D yaw / pitch turns (an image point moves by angle * depth * face height).
DEPTH_68 = np.array(
    [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.28, 0.3, 0.3, 0.3, 0.28, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0]
    + [0.2, 0.27, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.27, 0.2]
    + [0.3, 0.35, 0.4, 0.45, 0.33, 0.36, 0.4, 0.36, 0.33]
    + [0.2, 0.25, 0.25, 0.27, 0.25, 0.25, 0.27, 0.25, 0.25, 0.2, 0.25, 0.25]
    + [0.3, 0.35, 0.37, 0.38, 0.37, 0.35, 0.3, 0.35, 0.37, 0.38, 0.37, 0.35]
    + [0.32, 0.34, 0.35, 0.34, 0.32, 0.34, 0.35, 0.34])

# Eyelid pairs (upper, lower) whose gap closes in a blink.
LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
# Inner-lip pairs (upper, lower) that lip press / chin raise bring together.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))

TEXTURE_UPSCALE = 3  # the photo is upscaled once (bicubic), about to frame scale, then warped


@functools.lru_cache(maxsize=1)
def astronaut_rgb() -> np.ndarray:
  """The 512x512 RGB astronaut photograph shipped with scikit-image."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  return np.ascontiguousarray(data.astronaut())


def mirror_points(pts_Nx68x2: np.ndarray, width: int) -> np.ndarray:
  """Landmarks of the horizontally flipped image (``x -> width - 1 - x``, re-indexed)."""
  out = np.array(pts_Nx68x2, np.float64)[..., MIRROR_68, :]
  out[..., 0] = width - 1 - out[..., 0]
  return out


def texture_affine(upscale: int = TEXTURE_UPSCALE) -> np.ndarray:
  """2x3 affine: photo pixel coordinates -> pixels of the ``upscale``-times resized photo.

  ``cv2.resize`` aligns pixel centres: output pixel ``u`` samples input ``(u + 0.5) / s - 0.5``.
  """
  c = (upscale - 1) / 2.0
  return np.array([[upscale, 0.0, c], [0.0, upscale, c]])


def upscaled_texture(flip: bool, upscale: int = TEXTURE_UPSCALE) -> np.ndarray:
  """The (optionally mirrored) astronaut, BGR, upscaled bicubically by ``upscale``."""
  rgb = astronaut_rgb()[:, ::-1] if flip else astronaut_rgb()
  bgr = np.ascontiguousarray(rgb[:, :, ::-1])
  return cv2.resize(bgr, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)


def face_height(pts_68x2: np.ndarray) -> float:
  """Landmark span height: lowest jaw point minus highest brow point."""
  return float(pts_68x2[:, 1].max() - pts_68x2[:, 1].min())


def side_weights(pts_68x2: np.ndarray) -> np.ndarray:
  """``(68, 2)`` weights of each landmark on the image-left / image-right half of the face.

  Points near the midline (within 4% of the face height) are shared 50/50 so that a one-sided
  action unit moves them by half.
  """
  mid_x = float(np.mean(pts_68x2[list(NOSE_BRIDGE) + [33, 51, 57, 62, 66, 8], 0]))
  u = (pts_68x2[:, 0] - mid_x) / (0.04 * face_height(pts_68x2))
  right = np.clip(0.5 + 0.5 * u, 0.0, 1.0)  # image right
  return np.stack([1.0 - right, right], axis=1)
