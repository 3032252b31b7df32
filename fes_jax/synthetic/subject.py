"""Synthetic subjects: an identity warp, tone and placement of the astronaut photograph.

A ``Subject`` owns its texture (the recoloured, upscaled photo), a triangle mesh over its 68
landmarks plus two rings of anchor points and the frame border, and its neutral pose in the
frame. The inner ring (forehead, cheeks, below the chin) moves rigidly with the head; the outer
ring and the border stay put, so the background is static and the band between the rings
stretches when the head moves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import face
from fes_jax.synthetic import mesh
from fes_jax.synthetic import motion

N_RING = 24


@dataclasses.dataclass
class Subject:
  """Everything needed to render one subject's frames."""

  index: int
  params: dict[str, Any]
  texture: np.ndarray  # BGR uint8
  src_Vx2: np.ndarray  # vertex positions in the texture
  neutral_Vx2: np.ndarray  # vertex positions in the frame, neutral face, rest pose
  tri_Tx3: np.ndarray
  n_moving: int  # vertices [0, n_moving) move with the head: 68 landmarks + inner ring
  depth_V: np.ndarray  # pseudo-3D depth of the moving vertices (face heights)
  center_2: np.ndarray  # centre of head rotation / scaling (landmark bbox centre)
  face_h: float
  rot_2x2: np.ndarray  # base roll
  warper: mesh.MeshWarper

  @property
  def neutral_pts_68x2(self) -> np.ndarray:
    return self.neutral_Vx2[:68]

  @property
  def upright_pts_68x2(self) -> np.ndarray:
    """Neutral landmarks with the base roll undone (the frame AUs are defined in)."""
    return self.center_2 + (self.neutral_pts_68x2 - self.center_2) @ self.rot_2x2


def identity_offsets(rng: np.random.Generator, pts_68x2: np.ndarray,
                     strength: float) -> tuple[np.ndarray, dict[str, float]]:
  """A random face-shape change ``(68, 2)`` (same units as ``pts``) and its mode weights."""
  h = face.face_height(pts_68x2)
  z = {k: float(np.clip(rng.normal(), -2, 2) * strength) for k in (
      "face_width", "jaw_length", "eye_spacing", "eye_size", "brow_height", "nose_length",
      "nose_width", "mouth_width", "mouth_height", "lip_thickness")}
  p = pts_68x2
  out = np.zeros_like(p)
  mid_x = float(np.mean(p[list(face.NOSE_BRIDGE), 0]))
  side = np.sign(p[:, 0] - mid_x)
  jaw = list(face.JAW)
  out[jaw, 0] += 0.06 * z["face_width"] * (p[jaw, 0] - mid_x)
  chin_w = np.clip((p[jaw, 1] - p[jaw, 1].min()) / (p[jaw, 1].max() - p[jaw, 1].min()), 0, 1)
  out[jaw, 1] += 0.05 * h * z["jaw_length"] * chin_w
  upper = list(face.BROW_R + face.BROW_L + face.EYE_R + face.EYE_L)
  out[upper, 0] += 0.05 * z["face_width"] * (p[upper, 0] - mid_x)  # keep brow ends inside jaw
  temples, taper = [0, 1, 2, 3, 13, 14, 15, 16], np.array([1, .7, .4, .15, .15, .4, .7, 1])
  out[temples, 0] += 0.025 * h * z["eye_spacing"] * side[temples] * taper
  for eye, brow in ((face.EYE_R, face.BROW_R), (face.EYE_L, face.BROW_L)):
    idx = list(eye) + list(brow)
    out[idx, 0] += 0.025 * h * z["eye_spacing"] * side[idx]
    e = list(eye)
    out[e] += 0.1 * z["eye_size"] * (p[e] - p[e].mean(0))
  out[list(face.BROW_R + face.BROW_L), 1] -= 0.035 * h * z["brow_height"]
  out[[0, 16], 1] -= 0.03 * h * z["brow_height"]
  out[[30, 31, 32, 33, 34, 35], 1] += 0.02 * h * z["nose_length"]
  out[29, 1] += 0.01 * h * z["nose_length"]
  out[[31, 35], 0] += 0.03 * h * z["nose_width"] * side[[31, 35]]
  out[[32, 34], 0] += 0.015 * h * z["nose_width"] * side[[32, 34]]
  m = list(face.MOUTH_OUTER + face.MOUTH_INNER)
  out[m, 0] += 0.08 * z["mouth_width"] * (p[m, 0] - p[m, 0].mean())
  out[m, 1] += 0.02 * h * z["mouth_height"]
  out[[49, 50, 51, 52, 53], 1] -= 0.02 * h * z["lip_thickness"]
  out[[55, 56, 57, 58, 59], 1] += 0.02 * h * z["lip_thickness"]
  return smooth_field(p, out, 0.04 * h), z


def smooth_field(pts_Nx2: np.ndarray, field_Nx2: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian-kernel smoothing of a displacement field given at points.

  Neighbouring landmarks then move alike, so thin triangles between landmark groups (e.g.
  brow end and jaw top) keep their orientation.
  """
  d2_NxN = ((pts_Nx2[:, None] - pts_Nx2[None]) ** 2).sum(-1)
  w_NxN = np.exp(-d2_NxN / (2 * sigma**2))
  return w_NxN @ field_Nx2 / w_NxN.sum(1, keepdims=True)


def _similarity(scale: float, roll: float, src_c: np.ndarray, dst_c: np.ndarray) -> np.ndarray:
  """2x3 affine ``x -> scale R(roll) (x - src_c) + dst_c``."""
  a = motion.pose_matrix(roll, np.log(scale))
  return np.concatenate([a, (dst_c - a @ src_c)[:, None]], axis=1)


def _apply(aff_2x3: np.ndarray, pts_Nx2: np.ndarray) -> np.ndarray:
  return pts_Nx2 @ aff_2x3[:, :2].T + aff_2x3[:, 2]


def _invert(aff_2x3: np.ndarray) -> np.ndarray:
  return cv2.invertAffineTransform(aff_2x3)


def anchor_rings(pts_68x2: np.ndarray, size_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray]:
  """Inner ring, outer ring (clipped into the frame) and border points around a face.

  The inner ring follows the face outline at 0.14 face heights (0.3 above the brows, for the
  forehead); the outer ring lies 0.22 face heights further out.
  """
  w, h = size_wh
  fh = face.face_height(pts_68x2)
  c = (pts_68x2.min(0) + pts_68x2.max(0)) / 2
  rel_68x2 = pts_68x2 - c
  pt_ang = np.arctan2(rel_68x2[:, 1], rel_68x2[:, 0])
  ang = np.linspace(0, 2 * np.pi, N_RING, endpoint=False) + np.pi / N_RING
  dirs_Rx2 = np.stack([np.cos(ang), np.sin(ang)], 1)
  near_Rx68 = np.abs(np.angle(np.exp(1j * (pt_ang[None] - ang[:, None])))) < np.deg2rad(35)
  radial_Rx68 = np.where(near_Rx68, dirs_Rx2 @ rel_68x2.T, 0.0)
  margin_R = (0.14 + 0.16 * np.clip((-dirs_Rx2[:, 1] - 0.1) / 0.5, 0, 1)) * fh
  r_in = radial_Rx68.max(1) + margin_R
  for _ in range(2):  # smooth the outline so neighbouring ring points stay ordered
    r_in = np.maximum(r_in, 0.5 * r_in + 0.25 * (np.roll(r_in, 1) + np.roll(r_in, -1)))
  r_in = np.minimum(r_in, _radius_to_box(c, dirs_Rx2, size_wh, 50))
  r_near = np.maximum(r_in, np.maximum(np.roll(r_in, 1), np.roll(r_in, -1)))
  r_out = np.minimum(r_near + 0.22 * fh, _radius_to_box(c, dirs_Rx2, size_wh, 6))
  inner = c + dirs_Rx2 * r_in[:, None]
  outer = c + dirs_Rx2 * r_out[:, None]
  border = [(x, y) for x in np.linspace(0, w - 1, 6) for y in (0, h - 1)]
  border += [(x, y) for x in (0, w - 1) for y in np.linspace(0, h - 1, 5)[1:-1]]
  border = np.array(border, np.float64)
  d = np.linalg.norm(border[:, None] - outer[None], axis=2).min(1)
  corner = np.isin(border[:, 0], (0, w - 1)) & np.isin(border[:, 1], (0, h - 1))
  return inner, outer, border[(d > 24) | corner]


def _radius_to_box(c_2: np.ndarray, dirs_Rx2: np.ndarray, size_wh: tuple[int, int],
                   inset: float) -> np.ndarray:
  """Distance from ``c_2`` along each direction to the frame shrunk by ``inset`` pixels."""
  lo = np.array([inset, inset], np.float64)
  hi = np.array([size_wh[0] - 1 - inset, size_wh[1] - 1 - inset], np.float64)
  with np.errstate(divide="ignore"):
    t_Rx2 = np.where(dirs_Rx2 > 0, (hi - c_2) / dirs_Rx2,
                     np.where(dirs_Rx2 < 0, (lo - c_2) / dirs_Rx2, np.inf))
  return t_Rx2.min(1)


def _skin_mask(pts_68x2: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
  """Soft float32 mask of the skin: face (jaw line up to the forehead) and neck."""
  h = face.face_height(pts_68x2)
  brows = pts_68x2[list(range(26, 16, -1))] - np.array([0, 0.2 * h])
  poly = np.concatenate([pts_68x2[list(face.JAW)], brows])
  neck = pts_68x2[[4, 12]]
  neck = np.concatenate([neck, neck[::-1] + [0, 0.5 * h]])
  mask = np.zeros(shape_hw, np.float32)
  for p in (poly, neck):
    cv2.fillPoly(mask, [np.round(p).astype(np.int32)], 1.0)
  return cv2.GaussianBlur(mask, (0, 0), 0.05 * h)


def _tone(tex: np.ndarray, skin_Nx2: np.ndarray, p: dict[str, Any]) -> np.ndarray:
  """Applies skin darkening, contrast, brightness and white balance to a BGR texture."""
  f = tex.astype(np.float32)
  dark_bgr = 1.0 - p["skin_darkness"] * np.array([0.62, 0.55, 0.45], np.float32)
  mask = _skin_mask(skin_Nx2, tex.shape[:2])[:, :, None]
  f *= 1.0 + mask * (dark_bgr - 1.0)
  f = (f - 128.0) * p["contrast"] + 128.0 + p["brightness"]
  f *= np.asarray(p["white_balance_bgr"], np.float32)
  return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def sample_params(cfg: config_lib.SynthConfig, rng: np.random.Generator) -> dict[str, Any]:
  """The random, JSON-able parameters of one subject."""
  u = lambda r: float(rng.uniform(*r))
  jx, jy = cfg.face_center_jitter_px
  return {
      "flip": bool(rng.random() < cfg.flip_prob),
      "face_height_px": u(cfg.face_height_px),
      "center": [cfg.width / 2 + float(rng.uniform(-jx, jx)),
                 cfg.height * 0.49 + float(rng.uniform(-jy, jy))],
      "roll_deg": float(rng.uniform(-cfg.base_roll_deg, cfg.base_roll_deg)),
      "skin_darkness": u(cfg.skin_darkness),
      "contrast": u(cfg.contrast),
      "brightness": u(cfg.brightness),
      "white_balance_bgr": [float(1 + rng.uniform(-cfg.white_balance, cfg.white_balance))
                            for _ in range(3)],
      "identity_seed": int(rng.integers(2**31)),
  }


def _neutral_mesh(base_68x2: np.ndarray, params: dict[str, Any], strength: float,
                  size_wh: tuple[int, int]):
  """Neutral frame vertices, the unwarped (photo geometry) ones, photo->frame affine, #moving.

  The rings are laid around the unwarped face; the inner ring then follows the identity warp
  at 70% of a Gaussian-weighted mean of the nearby landmark offsets, so the neck and hair
  deform smoothly with the jaw and brows.
  """
  offs, _ = identity_offsets(np.random.default_rng(params["identity_seed"]), base_68x2, strength)
  shaped_68x2 = base_68x2 + offs
  lo, hi = shaped_68x2.min(0), shaped_68x2.max(0)
  scale = params["face_height_px"] / (hi[1] - lo[1])
  center = np.asarray(params["center"], np.float64)
  photo_to_frame = _similarity(scale, np.deg2rad(params["roll_deg"]), (lo + hi) / 2, center)
  unwarped_68x2 = _apply(photo_to_frame, base_68x2)
  shaped_68x2 = _apply(photo_to_frame, shaped_68x2)
  inner, outer, border = anchor_rings(unwarped_68x2, size_wh)
  d2_Rx68 = ((inner[:, None] - unwarped_68x2[None]) ** 2).sum(-1)
  w_Rx68 = np.exp(-d2_Rx68 / (2 * (0.12 * params["face_height_px"]) ** 2)) + 1e-12
  inner_dst = inner + 0.7 * (w_Rx68 @ (shaped_68x2 - unwarped_68x2)) / w_Rx68.sum(1, keepdims=True)
  neutral = np.concatenate([shaped_68x2, inner_dst, outer, border])
  unwarped = np.concatenate([unwarped_68x2, inner, outer, border])
  return neutral, unwarped, photo_to_frame, 68 + len(inner)


def build(index: int, params: dict[str, Any], cfg: config_lib.SynthConfig) -> Subject:
  """Builds the subject described by ``params`` (deterministic).

  The identity warp is retried at 0.6x strength while it folds more than 30 px^2 of the mesh.
  """
  size_wh = (cfg.width, cfg.height)
  base_68x2 = face.ASTRONAUT_PTS_68x2
  if params["flip"]:
    base_68x2 = face.mirror_points(base_68x2, face.astronaut_rgb().shape[1])
  strength = cfg.identity_strength
  for _ in range(8):
    neutral, unwarped, photo_to_frame, n_moving = _neutral_mesh(base_68x2, params, strength,
                                                                size_wh)
    tri = mesh.triangulate(unwarped)
    if mesh.folded_area(neutral, tri) <= 30.0:
      break
    strength *= 0.6
  params["identity_strength_used"] = strength
  # texture coordinates: photo -> upscaled texture, cropped to what the frame can show
  tex_aff = face.texture_affine()
  frame_to_tex = _compose(tex_aff, _invert(photo_to_frame))
  src = _apply(frame_to_tex, unwarped)
  x0, y0 = np.maximum(np.floor(src.min(0)) - 8, 0).astype(int)
  x1, y1 = np.ceil(src.max(0) + 8).astype(int)
  frame_to_tex[:, 2] -= [x0, y0]
  src -= [x0, y0]
  texture = face.upscaled_texture(params["flip"])[y0:y1, x0:x1]
  texture = _tone(texture, src[:68], params)
  rot = photo_to_frame[:, :2] / np.sqrt(abs(np.linalg.det(photo_to_frame[:, :2])))
  return Subject(
      index=index, params=params, texture=np.ascontiguousarray(texture), src_Vx2=src,
      neutral_Vx2=neutral, tri_Tx3=tri, n_moving=n_moving,
      depth_V=np.concatenate([face.DEPTH_68, np.zeros(n_moving - 68)]),
      center_2=np.asarray(params["center"], np.float64), face_h=float(params["face_height_px"]),
      rot_2x2=rot, warper=mesh.MeshWarper(src, tri, size_wh, frame_to_tex))


def _compose(a_2x3: np.ndarray, b_2x3: np.ndarray) -> np.ndarray:
  """The affine ``x -> a(b(x))``."""
  return np.concatenate([a_2x3[:, :2] @ b_2x3[:, :2],
                         (a_2x3[:, :2] @ b_2x3[:, 2] + a_2x3[:, 2])[:, None]], axis=1)
