"""Renders a planned video: mesh warp, lighting gain, sensor noise, JPEG."""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import cv2
import numpy as np

from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import layout
from fes_jax.synthetic import plan as plan_lib
from fes_jax.synthetic import subject as subject_lib
from fes_jax.synthetic import tracks as tracks_lib

_NOISE_BANK = 8
_NOISE_PAD = 32


class NoiseBank:
  """Gaussian sensor noise: a few precomputed int16 fields, cropped at a random offset per frame.

  Rounding the noise to integers before adding it to an integer image is the same as rounding
  the noisy image.
  """

  def __init__(self, rng: np.random.Generator, shape_hw3: tuple[int, int, int], sigma: float):
    h, w, c = shape_hw3
    self._rng = rng
    self._shape = shape_hw3
    bank = rng.standard_normal((_NOISE_BANK, h + _NOISE_PAD, w + _NOISE_PAD, c), dtype=np.float32)
    self._bank = np.round(bank * sigma).astype(np.int16)

  def sample(self) -> np.ndarray:
    h, w, _ = self._shape
    i, dy, dx = self._rng.integers(0, (_NOISE_BANK, _NOISE_PAD, _NOISE_PAD))
    return self._bank[i, dy:dy + h, dx:dx + w]


def render_frame(subj: subject_lib.Subject, verts_Vx2: np.ndarray, gain: float,
                 noise_HxWx3: np.ndarray | None) -> np.ndarray:
  """One BGR uint8 frame (before JPEG): warp, lighting gain, sensor noise (saturating)."""
  img = subj.warper.warp(subj.texture, verts_Vx2)
  img = cv2.convertScaleAbs(img, alpha=float(gain))
  if noise_HxWx3 is not None:
    img = cv2.add(img, np.ascontiguousarray(noise_HxWx3), dtype=cv2.CV_8U)
  return img


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
  ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise RuntimeError("JPEG encoding failed")
  return buf.tobytes()


def prepare(cfg: config_lib.SynthConfig, seed: int, plan: dict[str, Any],
            subject_params: dict[str, Any]) -> tuple[subject_lib.Subject, tracks_lib.Tracks]:
  subj = subject_lib.build(plan["participant"], dict(subject_params), cfg)
  return subj, tracks_lib.build(plan, subj, cfg.fps, cfg.flicker_hz, cfg.light_drift)


def render_video(cfg: config_lib.SynthConfig, seed: int, plan: dict[str, Any],
                 subject_params: dict[str, Any], frames_dir: pathlib.Path,
                 progress: Callable[[int], None] | None = None,
                 frames: range | None = None) -> tuple[np.ndarray, dict[str, Any]]:
  """Writes ``img<i>.jpg`` into ``frames_dir``; returns ground-truth landmarks and details.

  Args:
    frames: 1-based frame numbers to write (default all); the noise stream does not depend on
      it, so a partial render has the same bytes as the full one for those frames.
  """
  subj, tr = prepare(cfg, seed, plan, subject_params)
  rng = plan_lib.rng_for(seed, 2, plan["participant"], plan["video_index"])
  noise = NoiseBank(rng, (cfg.height, cfg.width, 3), plan["photometric"]["noise_sigma"])
  frames_dir.mkdir(parents=True, exist_ok=True)
  wanted = set(frames if frames is not None else range(1, plan["num_frames"] + 1))
  for i in range(plan["num_frames"]):
    nz = noise.sample()
    if i + 1 not in wanted:
      continue
    bgr = render_frame(subj, tr.vertices_NxVx2[i], float(tr.gain_N[i]), nz)
    (frames_dir / layout.frame_file(i + 1)).write_bytes(encode_jpeg(bgr, cfg.jpeg_quality))
    if progress is not None:
      progress(1)
  landmarks = tr.vertices_NxVx2[:, :68].astype(np.float32)
  details = {
      "subject_params": subj.params,
      "effective": tr.effective,
      "max_folded_area_px2": tr.max_folded_px2,
      "pose_range": {"tx": _span(tr.pose_Nx6[:, 0]), "ty": _span(tr.pose_Nx6[:, 1]),
                     "roll_deg": _span(np.rad2deg(tr.pose_Nx6[:, 2])),
                     "yaw_deg": _span(np.rad2deg(tr.pose_Nx6[:, 4]))},
  }
  return landmarks, details


def _span(x: np.ndarray) -> list[float]:
  return [float(x.min()), float(x.max())]
