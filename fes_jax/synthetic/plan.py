"""Random, JSON-able plans of the synthetic videos: intervals and distractor events.

A plan depends only on the config, the seed and the video's identity, never on the worker that
renders it. Frames are 1-based like the annotations; an expression's intensity is 0 at its
onset and offset frames and 1 at its apex.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import layout
from fes_jax.synthetic import motion
from fes_jax.synthetic import stats

_STATS = stats.frozen()


def rng_for(seed: int, *key: int) -> np.random.Generator:
  """An independent generator for ``key`` (e.g. ``(kind, subject, video)``) under ``seed``."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))


def _draw(rng: np.random.Generator, counts: dict[Any, int]) -> Any:
  keys = list(counts)
  p = np.array([counts[k] for k in keys], np.float64)
  return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _combos(typ: str, region: str | None) -> dict[tuple[tuple[int, ...], str], int]:
  """Real (AUs, estimated emotion) counts whose AUs we can animate, optionally one region."""
  out = {}
  for key, n in _STATS["au_emotion"][typ].items():
    aus_s, est = key.rsplit(":", 1)
    aus = motion.parse_aus(aus_s)
    if not set(aus) <= motion.SUPPORTED_AUS:
      continue
    upper = {a in motion.UPPER_FACE_AUS for a in aus}
    if region is not None and upper != {region == "upper"}:
      continue
    out[(aus, est)] = out.get((aus, est), 0) + n
  return out


def _region(aus: list[int]) -> str | None:
  upper = {a in motion.UPPER_FACE_AUS for a in aus}
  return None if len(upper) > 1 else ("upper" if upper == {True} else "lower")


def sample_expression(rng: np.random.Generator, typ: str, cfg: config_lib.SynthConfig,
                      region: str | None = None) -> dict[str, Any]:
  """One expression without a position: AUs, emotions, duration, apex, amplitude, asymmetry."""
  aus, est = _draw(rng, _combos(typ, region))
  self_em = _draw(rng, _STATS["self_emotion"][f"{typ}:{est}"])
  dur = int(_draw(rng, _STATS["durations"][typ]))
  frac = float(np.interp(rng.random(), np.linspace(0, 1, 11), _STATS["apex_fraction_deciles"][typ]))
  apex_off = int(np.clip(round(frac * (dur - 1)), 1, max(1, dur - 2)))
  me = typ == "me"
  side_gain = [1.0, 1.0]
  if rng.random() < (cfg.me_asym_prob if me else cfg.mae_asym_prob):
    side_gain[int(rng.integers(2))] = float(rng.uniform(*cfg.asym_factor))
  return {
      "type": typ, "aus": [int(a) for a in aus], "emotion": est, "self_emotion": self_em,
      "duration": dur, "apex_offset": apex_off,
      "peak_px": float(rng.uniform(*(cfg.me_amp_px if me else cfg.mae_amp_px))),
      "au_weights": [float(w) for w in rng.uniform(0.6, 1.0, len(aus))],
      "side_gain": side_gain,
      "plateau": 0.0 if me else float(rng.uniform(*cfg.mae_plateau)),
  }


def _place(rng: np.random.Generator, lo: int, hi: int, dur: int, busy: list[tuple[int, int]],
           gap: int) -> int | None:
  """An onset in ``[lo, hi - dur + 1]`` keeping ``gap`` frames from every busy span."""
  if hi - dur + 1 < lo:
    return None
  for _ in range(300):
    on = int(rng.integers(lo, hi - dur + 2))
    if all(on + dur - 1 + gap < a or b + gap < on for a, b in busy):
      return on
  return None


def _expressions(rng: np.random.Generator, cfg: config_lib.SynthConfig, n_frames: int,
                 n_mae: int, n_me: int) -> tuple[list[dict[str, Any]], int]:
  """Places ``n_mae`` MaEs and ``n_me`` MEs; returns them sorted, and how many did not fit."""
  lo, hi = 1 + cfg.edge_margin_frames, n_frames - cfg.edge_margin_frames
  busy, out, dropped = [], [], 0
  for _ in range(n_mae):
    e = sample_expression(rng, "mae", cfg)
    on = _place(rng, lo, hi, e["duration"], busy, cfg.min_gap_frames)
    if on is None:
      dropped += 1
      continue
    e["onset"] = on
    busy.append((on, on + e["duration"] - 1))
    out.append(e)
  hosts = [e for e in out if _region(e["aus"]) is not None]
  for _ in range(n_me):
    nest = hosts and rng.random() < cfg.me_nested_prob
    host = hosts[int(rng.integers(len(hosts)))] if nest else None
    if host is not None:
      e = sample_expression(rng, "me", cfg, "lower" if _region(host["aus"]) == "upper" else "upper")
      inner = host.setdefault("_inner", [])
      on = _place(rng, host["onset"] + 2, host["onset"] + host["duration"] - 3, e["duration"],
                  inner, 2)
      if on is not None:
        e["onset"], e["nested"] = on, True
        inner.append((on, on + e["duration"] - 1))
        out.append(e)
        continue
    e = sample_expression(rng, "me", cfg)
    on = _place(rng, lo, hi, e["duration"], busy, cfg.min_gap_frames)
    if on is None:
      dropped += 1
      continue
    e["onset"] = on
    busy.append((on, on + e["duration"] - 1))
    out.append(e)
  for e in out:
    e.pop("_inner", None)
    e.setdefault("nested", False)
    e["apex"] = e["onset"] + e.pop("apex_offset")
    e["offset"] = e["onset"] + e["duration"] - 1
    e["offset_missing"] = bool(e["type"] == "mae" and rng.random() < cfg.missing_offset_frac)
  out.sort(key=lambda e: (e["onset"], e["offset"]))
  return out, dropped


def _blinks(rng: np.random.Generator, cfg: config_lib.SynthConfig, n: int) -> list[dict[str, Any]]:
  out, t = [], float(rng.uniform(0, cfg.blink_interval_s[1] * cfg.fps))
  while t < n:
    dur = int(rng.integers(int(cfg.blink_frames[0]), int(cfg.blink_frames[1]) + 1))
    closure = float(rng.uniform(*cfg.blink_closure))
    out.append({"start": int(t) + 1, "frames": dur, "closure": closure})
    t += dur + rng.uniform(*cfg.blink_interval_s) * cfg.fps
  return out


def _drift(rng: np.random.Generator, cfg: config_lib.SynthConfig) -> dict[str, Any]:
  """Three sinusoids per pose component (tx, ty, roll, log-scale, yaw, pitch)."""
  amp = [cfg.drift_px, cfg.drift_px, np.deg2rad(cfg.drift_roll_deg), cfg.drift_scale,
         np.deg2rad(cfg.drift_yaw_deg), np.deg2rad(cfg.drift_pitch_deg)]
  w = rng.uniform(0.3, 1.0, (6, 3))
  w *= np.asarray(amp)[:, None] * np.sqrt(2) / np.linalg.norm(w, axis=1, keepdims=True)
  return {"amp": w.tolist(), "period_s": rng.uniform(*cfg.drift_period_s, (6, 3)).tolist(),
          "phase": rng.uniform(0, 2 * np.pi, (6, 3)).tolist()}


def _turns(rng: np.random.Generator, cfg: config_lib.SynthConfig, n: int) -> list[dict[str, Any]]:
  """Fast head moves: reach a pose offset in a few frames, hold, maybe return."""
  k = int(rng.poisson(cfg.turns_per_minute * n / cfg.fps / 60))
  out, free = [], 1
  for start in np.sort(rng.integers(1, max(2, n), k)):
    start = max(int(start), free)
    kind = str(rng.choice(["shift", "roll", "yaw", "mixed"]))
    target = np.zeros(6)
    sign = lambda: float(rng.choice([-1.0, 1.0]))
    if kind in ("shift", "mixed"):
      ang = rng.uniform(0, 2 * np.pi)
      target[:2] = rng.uniform(*cfg.turn_shift_px) * np.array([np.cos(ang), np.sin(ang)])
    if kind in ("roll", "mixed"):
      target[2] = sign() * np.deg2rad(rng.uniform(*cfg.turn_roll_deg))
    if kind in ("yaw", "mixed"):
      target[4] = sign() * np.deg2rad(rng.uniform(*cfg.turn_yaw_deg))
      target[5] = rng.uniform(-0.3, 0.3) * target[4]
    frames = int(rng.integers(int(cfg.turn_frames[0]), int(cfg.turn_frames[1]) + 1))
    hold = int(rng.uniform(*cfg.turn_hold_s) * cfg.fps)
    back = bool(rng.random() < cfg.turn_return_prob)
    out.append({"start": start, "frames": frames, "kind": kind, "target": target.tolist(),
                "hold": hold, "returns": back})
    free = start + frames + hold + (2 * frames if back else 0) + 1
  return out


def _talk(rng: np.random.Generator, cfg: config_lib.SynthConfig, n: int) -> list[dict[str, Any]]:
  if rng.random() >= cfg.talk_video_prob:
    return []
  k = max(1, int(rng.poisson(cfg.talk_per_minute * n / cfg.fps / 60)))
  out = []
  for _ in range(k):
    frames = int(rng.uniform(*cfg.talk_s) * cfg.fps)
    out.append({"start": int(rng.integers(1, max(2, n - frames))), "frames": frames,
                "hz": float(rng.uniform(*cfg.talk_hz)),
                "jaw_px": float(rng.uniform(*cfg.talk_jaw_px)),
                "seed": int(rng.integers(2**31))})
  return sorted(out, key=lambda s: s["start"])


def plan_video(cfg: config_lib.SynthConfig, seed: int, participant: int, video_index: int,
               code: str, num_frames: int, counts: tuple[int, int] | None = None) -> dict[str, Any]:
  """The full plan of one video. ``counts`` fixes (#MaE, #ME); else Poisson per config."""
  rng = rng_for(seed, 1, participant, video_index)
  minutes = num_frames / cfg.fps / 60
  if counts is None:
    counts = (max(cfg.min_mae_per_video, int(rng.poisson(cfg.mae_per_minute * minutes))),
              max(cfg.min_me_per_video, int(rng.poisson(cfg.me_per_minute * minutes))))
  exprs, dropped = _expressions(rng, cfg, num_frames, *counts)
  return {
      "name": layout.video_name(participant, code), "participant": participant,
      "subject": layout.subject_folder(participant), "code": code,
      "stem": layout.VIDEO_CODES[code][0], "folder": layout.video_folder(participant, code),
      "video_index": video_index, "num_frames": num_frames,
      "seed": [seed, participant, video_index],
      "intervals": exprs, "dropped_intervals": dropped, "blinks": _blinks(rng, cfg, num_frames),
      "drift": _drift(rng, cfg), "turns": _turns(rng, cfg, num_frames),
      "talk": _talk(rng, cfg, num_frames),
      "photometric": {"flicker_amp": float(rng.uniform(*cfg.flicker_amp)),
                      "flicker_phase": float(rng.uniform(0, 2 * np.pi)),
                      "light_period_s": float(rng.uniform(10, 40)),
                      "light_phase": float(rng.uniform(0, 2 * np.pi)),
                      "noise_sigma": float(rng.uniform(*cfg.noise_sigma))},
  }


def video_list(cfg: config_lib.SynthConfig,
               seed: int) -> list[tuple[int, int, str, int, tuple | None]]:
  """``(participant, video_index, code, num_frames, counts)`` of every video to generate."""
  if cfg.num_subjects > len(layout.FOLDER_NUMBERS):
    raise ValueError(f"at most {len(layout.FOLDER_NUMBERS)} subjects (CAS(ME)^2 numbering)")
  out = []
  if cfg.real_videos:
    for p in range(1, cfg.num_subjects + 1):
      real = [v for v in _STATS["videos"] if v[0] == layout.subject_folder(p)]
      out += [(p, i, c, n, (a, b)) for i, (_, c, n, a, b) in enumerate(real)]
    return out
  codes = sorted(layout.VIDEO_CODES)
  for p in range(1, cfg.num_subjects + 1):
    chosen = rng_for(seed, 3, p).choice(len(codes), cfg.videos_per_subject, replace=False)
    out += [(p, i, codes[j], cfg.num_frames, None) for i, j in enumerate(sorted(chosen))]
  return out
