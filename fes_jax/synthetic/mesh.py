"""Piecewise-affine mesh warping with OpenCV, fast enough for ~100 frames/s.

A mesh is a fixed triangle list over ``V`` vertices. Each vertex has a position in the source
texture and a (per-frame) position in the output frame. For every output pixel we find its
triangle by rasterising triangle ids (``cv2.fillConvexPoly``), look up that triangle's
destination->source affine (``cv2.LUT`` on the id image) and ``cv2.remap`` the texture. The map
is exact piecewise affine: a vertex at source ``s_i`` lands exactly at destination ``d_i``.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import spatial

_SHIFT = 4  # sub-pixel bits for cv2.fillConvexPoly


def triangulate(pts_Vx2: np.ndarray) -> np.ndarray:
  """Delaunay triangles ``(T, 3)`` int32, oriented counter-clockwise in image coordinates."""
  tri_Tx3 = spatial.Delaunay(pts_Vx2).simplices.astype(np.int32)
  area_T = signed_areas(pts_Vx2, tri_Tx3)
  tri_Tx3[area_T < 0] = tri_Tx3[area_T < 0][:, ::-1]
  return tri_Tx3


def signed_areas(pts_NxVx2: np.ndarray, tri_Tx3: np.ndarray) -> np.ndarray:
  """Signed triangle areas ``(..., T)`` (positive for the orientation ``triangulate`` returns)."""
  p = np.asarray(pts_NxVx2, np.float64)
  a, b, c = (p[..., tri_Tx3[:, k], :] for k in range(3))
  return 0.5 * ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
                - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))


def folded_area(pts_NxVx2: np.ndarray, tri_Tx3: np.ndarray, per_frame: bool = False):
  """Total area of the triangles that the vertices turn inside out (0 when none folds).

  Thin triangles between landmark groups (brow end / jaw top, nostril / lip) fold under some
  motions; a fold of a few square pixels only misplaces those few pixels. With
  ``per_frame``, ``pts`` is ``(N, V, 2)`` and the result an ``(N,)`` array.
  """
  out = np.clip(-signed_areas(pts_NxVx2, tri_Tx3), 0, None).sum(-1)
  return out if per_frame else float(out)


def triangle_affines(src_Vx2: np.ndarray, dst_Vx2: np.ndarray, tri_Tx3: np.ndarray) -> np.ndarray:
  """Per-triangle affine ``(T, 2, 3)`` mapping destination points to source points."""
  d_Tx3x3 = np.ones((len(tri_Tx3), 3, 3))
  d_Tx3x3[:, :2, :] = np.transpose(dst_Vx2[tri_Tx3], (0, 2, 1))
  s_Tx2x3 = np.transpose(src_Vx2[tri_Tx3], (0, 2, 1)).astype(np.float64)
  return s_Tx2x3 @ np.linalg.inv(d_Tx3x3)


class MeshWarper:
  """Warps one source texture onto frames of a fixed size through a fixed triangle mesh."""

  def __init__(self, src_Vx2: np.ndarray, tri_Tx3: np.ndarray, size_wh: tuple[int, int],
               background_affine_2x3: np.ndarray):
    """Args:
      src_Vx2: vertex positions in the texture (pixel-centre coordinates).
      tri_Tx3: triangles (at most 254), consistently oriented in source and destination.
      size_wh: output frame size.
      background_affine_2x3: destination->source affine for pixels no triangle covers.
    """
    if len(tri_Tx3) > 254:
      raise ValueError(f"at most 254 triangles, got {len(tri_Tx3)}")
    self.src_Vx2 = np.asarray(src_Vx2, np.float64)
    self.tri_Tx3 = np.asarray(tri_Tx3, np.int32)
    self.w, self.h = size_wh
    self._bg = np.asarray(background_affine_2x3, np.float64)
    self._xs = np.tile(np.arange(self.w, dtype=np.float32), (self.h, 1))
    self._ys = np.tile(np.arange(self.h, dtype=np.float32)[:, None], (1, self.w))
    self._ids = np.empty((self.h, self.w), np.uint8)

  def maps(self, dst_Vx2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(map_x, map_y)`` float32 ``(H, W)`` for ``cv2.remap`` given destination vertices."""
    aff_Tx2x3 = triangle_affines(self.src_Vx2, dst_Vx2, self.tri_Tx3)
    lut_256x6 = np.zeros((256, 6), np.float32)
    lut_256x6[:] = self._bg.reshape(6)
    lut_256x6[:len(aff_Tx2x3)] = aff_Tx2x3.reshape(-1, 6)
    self._ids.fill(255)
    fixed_Vx2 = np.round(np.asarray(dst_Vx2) * (1 << _SHIFT)).astype(np.int32)
    for t, tri in enumerate(self.tri_Tx3):
      cv2.fillConvexPoly(self._ids, fixed_Vx2[tri], t, lineType=cv2.LINE_8, shift=_SHIFT)
    coef = [cv2.LUT(self._ids, np.ascontiguousarray(lut_256x6[:, k])) for k in range(6)]
    map_x = coef[0] * self._xs + coef[1] * self._ys + coef[2]
    map_y = coef[3] * self._xs + coef[4] * self._ys + coef[5]
    return map_x, map_y

  def warp(self, texture: np.ndarray, dst_Vx2: np.ndarray) -> np.ndarray:
    """The texture warped so that source vertex ``i`` lands at ``dst_Vx2[i]``."""
    map_x, map_y = self.maps(dst_Vx2)
    return cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
