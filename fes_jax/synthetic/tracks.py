"""Per-frame motion of a planned video on a given subject: AU amplitudes, pose, vertices.

Everything here is vectorised over frames; the renderer only warps and encodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fes_jax.synthetic import face
from fes_jax.synthetic import mesh
from fes_jax.synthetic import motion
from fes_jax.synthetic import subject as subject_lib

AUS = tuple(sorted(motion.SUPPORTED_AUS))
_K = {au: k for k, au in enumerate(AUS)}


@dataclasses.dataclass
class Tracks:
  amps_NxKx2: np.ndarray  # px per AU and face side (image-left, image-right)
  pose_Nx6: np.ndarray  # tx, ty, roll, log-scale, yaw, pitch
  vertices_NxVx2: np.ndarray  # mesh vertices in the frame
  gain_N: np.ndarray  # multiplicative lighting
  effective: list[dict[str, Any]]  # per interval: the AU amplitudes actually used
  max_folded_px2: float


def profile(n: int, onset: int, apex: int, offset: int, plateau: float = 0.0) -> np.ndarray:
  """Raised-cosine onset->apex rise, optional apex hold, fall to 0 at ``offset`` (1-based)."""
  t = np.arange(1, n + 1, dtype=np.float64)
  hold_end = apex + plateau * (offset - apex)
  rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / max(apex - onset, 1e-9), 0, 1))
  fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - hold_end) / max(offset - hold_end, 1e-9), 0, 1))
  out = np.where(t <= apex, rise, np.where(t <= hold_end, 1.0, fall))
  out[(t <= onset) | (t >= offset)] = 0.0
  return out


def blink_profile(n: int, start: int, frames: int) -> np.ndarray:
  """Eyelid closure of a blink: fast close (a third of the time), slower reopening."""
  t = np.arange(1, n + 1, dtype=np.float64) - start
  close = max(1.0, frames / 3)
  up = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / close, 0, 1))
  down = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - close) / max(frames - close, 1), 0, 1))
  out = np.where(t <= close, up, down)
  out[(t < 0) | (t > frames)] = 0.0
  return out


def au_bases(subj: subject_lib.Subject) -> tuple[np.ndarray, np.ndarray]:
  """``(K, 2, 68, 2)`` unit bases of every AU in ``AUS`` and their max amplitudes ``(K,)``."""
  out = [motion.au_bases(au, subj.upright_pts_68x2, subj.rot_2x2) for au in AUS]
  return np.stack([b for b, _ in out]), np.array([m for _, m in out])


def _expression_amps(plan: dict[str, Any], bases: np.ndarray, n: int) -> tuple[np.ndarray, list]:
  amps = np.zeros((n, len(AUS), 2))
  effective = []
  for e in plan["intervals"]:
    ks = [_K[a] for a in e["aus"]]
    w = np.asarray(e["au_weights"])
    field_68x2 = np.einsum("k,kld->ld", w, bases[ks].sum(1))
    scale = e["peak_px"] / np.linalg.norm(field_68x2, axis=1).max()
    prof = profile(n, e["onset"], e["apex"], e["offset"], e["plateau"])
    for k, wk in zip(ks, w):
      amps[:, k, :] += prof[:, None] * scale * wk * np.asarray(e["side_gain"])[None]
    effective.append({"au_amp_px": {str(a): float(scale * wk) for a, wk in zip(e["aus"], w)}})
  return amps, effective


def _distractor_amps(plan: dict[str, Any], max_amp: np.ndarray, n: int) -> np.ndarray:
  amps = np.zeros((n, len(AUS), 2))
  full_closure = max_amp[_K[45]] / motion.MAX_CLOSURE
  for b in plan["blinks"]:
    closure_N = b["closure"] * full_closure * blink_profile(n, b["start"], b["frames"])
    amps[:, _K[45], :] += closure_N[:, None]
  t = np.arange(1, n + 1, dtype=np.float64)
  for s in plan["talk"]:
    rng = np.random.default_rng(s["seed"])
    u = (t - s["start"]) / s["frames"]
    env = np.where((u >= 0) & (u <= 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 0.5, 0.0)
    phase = 2 * np.pi * s["hz"] * (t - s["start"]) / 30.0
    syll = rng.uniform(0.3, 1.0, int(s["frames"] * s["hz"] / 30.0) + 3)
    idx = np.clip(((t - s["start"]) * s["hz"] / 30.0).astype(int), 0, len(syll) - 1)
    jaw = s["jaw_px"] * env * syll[idx] * np.sin(phase / 2) ** 2
    amps[:, _K[26], :] += jaw[:, None]
    amps[:, _K[25], :] += 0.4 * jaw[:, None]
    amps[:, _K[18], :] += (0.3 * jaw * (np.sin(phase / 3.3) > 0))[:, None]
  return amps


def keep_apart(pts_68x2: np.ndarray, disp_Nx68x2: np.ndarray,
               pairs: tuple[tuple[int, int], ...], share_upper: float,
               min_gap: float = 1 - motion.MAX_CLOSURE) -> np.ndarray:
  """Limits displacements so each (upper, lower) pair keeps ``min_gap`` of its neutral gap.

  Blinks, AU43 and lid-moving AUs (4, 5, 6, 7) add up, as do lip press and chin raise; this
  keeps the eye and mouth triangles from folding. The upper point gives way ``share_upper``.
  """
  out = disp_Nx68x2.copy()
  for up, low in pairs:
    gap_2 = pts_68x2[low] - pts_68x2[up]
    norm = float(np.linalg.norm(gap_2))
    unit_2 = gap_2 / norm
    s_N = norm + (out[:, low] - out[:, up]) @ unit_2
    short_N = np.maximum(0.0, min_gap * norm - s_N)
    out[:, up] -= share_upper * short_N[:, None] * unit_2
    out[:, low] += (1 - share_upper) * short_N[:, None] * unit_2
  return out


def pose_track(plan: dict[str, Any], n: int, fps: float) -> np.ndarray:
  """``(N, 6)`` head pose: slow drift plus the fast turns."""
  t = np.arange(n, dtype=np.float64) / fps
  d = plan["drift"]
  amp, per, ph = (np.asarray(d[k]) for k in ("amp", "period_s", "phase"))
  pose = np.einsum("cj,ncj->nc", amp, np.sin(2 * np.pi * t[:, None, None] / per[None] + ph[None]))
  offset = np.zeros((n, 6))
  cur = np.zeros(6)
  for ev in plan["turns"]:
    s, f, tgt = ev["start"] - 1, ev["frames"], np.asarray(ev["target"])
    segments = [(s, f, cur, tgt)]
    if ev["returns"]:
      segments.append((s + f + ev["hold"], 2 * f, tgt, np.zeros(6)))
    for a, length, p0, p1 in segments:
      u = np.clip((np.arange(n) - a) / length, 0, 1)
      smooth = u * u * (3 - 2 * u)
      offset[a:] = p0[None] + smooth[a:, None] * (p1 - p0)[None]
    cur = np.zeros(6) if ev["returns"] else tgt
  return pose + offset


def gain_track(plan: dict[str, Any], n: int, cfg_fps: float, flicker_hz: float,
               light_drift: float) -> np.ndarray:
  ph = plan["photometric"]
  t = np.arange(n, dtype=np.float64) / cfg_fps
  return (1.0 + ph["flicker_amp"] * np.sin(2 * np.pi * flicker_hz * t + ph["flicker_phase"])
          + light_drift * np.sin(2 * np.pi * t / ph["light_period_s"] + ph["light_phase"]))


def build(plan: dict[str, Any], subj: subject_lib.Subject, fps: float = 30.0,
          flicker_hz: float = 10.0, light_drift: float = 0.03) -> Tracks:
  """All per-frame quantities of ``plan`` rendered on ``subj``."""
  n = plan["num_frames"]
  bases, max_amp = au_bases(subj)
  amps, effective = _expression_amps(plan, bases, n)
  amps += _distractor_amps(plan, max_amp, n)
  closure = amps[:, _K[43]] + amps[:, _K[45]]
  cap = max_amp[_K[45]]
  shrink = np.minimum(1.0, cap / np.maximum(closure, 1e-12))
  amps[:, _K[43]] *= shrink
  amps[:, _K[45]] *= shrink
  disp_Nx68x2 = np.einsum("nks,ksld->nld", amps, bases)
  disp_Nx68x2 = keep_apart(subj.neutral_pts_68x2, disp_Nx68x2, face.LID_PAIRS, 0.85)
  disp_Nx68x2 = keep_apart(subj.neutral_pts_68x2, disp_Nx68x2, face.INNER_LIP_PAIRS, 0.5)
  pose = pose_track(plan, n, fps)
  moving = np.broadcast_to(subj.neutral_Vx2[:subj.n_moving], (n, subj.n_moving, 2)).copy()
  moving[:, :68] += disp_Nx68x2
  moved = motion.apply_pose(moving, subj.depth_V, subj.center_2, subj.face_h, subj.rot_2x2, pose)
  verts = np.concatenate([moved, np.broadcast_to(subj.neutral_Vx2[subj.n_moving:],
                                                 (n, len(subj.neutral_Vx2) - subj.n_moving, 2))], 1)
  folded = mesh.folded_area(verts, subj.tri_Tx3, per_frame=True).max()
  return Tracks(amps, pose, verts, gain_track(plan, n, fps, flicker_hz, light_drift), effective,
                float(folded))
