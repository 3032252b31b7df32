"""Every parameter of the synthetic generator, with the presets ``tiny``, ``default``, ``full``.

Ranges ``(lo, hi)`` are sampled uniformly. Pixel amounts are in frame pixels (640x480 frames,
faces 255-295 px from brow top to chin).
"""

from __future__ import annotations

import dataclasses
from typing import Any

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  """Generator parameters. ``dataclasses.replace`` a preset to customise."""

  preset: str = "default"
  # --- dataset size ---------------------------------------------------------------------
  num_subjects: int = 8  # participants 1..N, folders s15, s16, ... (the real numbering)
  videos_per_subject: int = 2  # video codes drawn from the 9 real ones, distinct per subject
  num_frames: int = 1200  # frames per video (ignored when real_videos)
  real_videos: bool = False  # the 98 real videos: their subjects, codes, lengths and counts
  fps: float = 30.0
  width: int = 640
  height: int = 480
  jpeg_quality: int = 90
  # --- subjects (identity, constant across a subject's videos) ---------------------------
  face_height_px: Range = (255.0, 295.0)  # landmark span, brow top to chin
  face_center_jitter_px: Range = (40.0, 8.0)  # +- x, y around (320, 235)
  base_roll_deg: float = 4.0  # +- constant head roll
  identity_strength: float = 0.8  # std of the face-shape modes (dlib error grows with it)
  flip_prob: float = 0.5  # mirror the photograph
  skin_darkness: Range = (0.0, 0.6)  # 0 = the photo's skin tone, 1 = very dark
  contrast: Range = (0.8, 1.15)
  brightness: Range = (-15.0, 15.0)  # grey levels
  white_balance: float = 0.06  # +- per-channel gain
  # --- expressions ------------------------------------------------------------------------
  mae_per_minute: float = 6.0  # Poisson mean per minute of video (not used when real_videos)
  me_per_minute: float = 4.0
  min_mae_per_video: int = 1
  min_me_per_video: int = 1
  mae_amp_px: Range = (3.0, 9.0)  # apex displacement of the most-moving landmark, per AU
  me_amp_px: Range = (0.5, 2.0)
  me_asym_prob: float = 0.3  # one side of the face moves only asym_factor as much
  mae_asym_prob: float = 0.1
  asym_factor: Range = (0.0, 0.4)
  me_nested_prob: float = 0.2  # an ME placed inside a MaE of the other face half
  min_gap_frames: int = 12  # between non-nested intervals
  edge_margin_frames: int = 15  # no interval within this many frames of either end
  mae_plateau: Range = (0.0, 0.5)  # share of apex->offset a MaE holds its apex
  missing_offset_frac: float = 0.0  # MaE rows written with offset 0, as 44 real rows are
  # --- distractors ------------------------------------------------------------------------
  blink_interval_s: Range = (2.0, 6.0)
  blink_frames: Range = (3.0, 12.0)  # 100-400 ms
  blink_closure: Range = (0.8, 0.95)  # of the full eyelid gap
  drift_px: float = 4.0  # slow head drift (3 sinusoids): std of tx and of ty
  drift_roll_deg: float = 1.0
  drift_scale: float = 0.01
  drift_yaw_deg: float = 2.0
  drift_pitch_deg: float = 1.5
  drift_period_s: Range = (4.0, 25.0)
  turns_per_minute: float = 4.0  # fast head turns / translations
  turn_frames: Range = (4.0, 12.0)
  turn_shift_px: Range = (5.0, 16.0)
  turn_roll_deg: Range = (1.5, 5.0)
  turn_yaw_deg: Range = (3.0, 8.0)
  turn_hold_s: Range = (0.5, 3.0)
  turn_return_prob: float = 0.7
  talk_video_prob: float = 0.4  # videos where the subject talks now and then
  talk_per_minute: float = 3.0
  talk_s: Range = (1.0, 4.0)
  talk_hz: Range = (3.0, 5.0)  # syllable rate
  talk_jaw_px: Range = (2.0, 7.0)
  flicker_amp: Range = (0.003, 0.015)  # relative gain, 10 Hz (100 Hz mains aliased at 30 fps)
  flicker_hz: float = 10.0
  light_drift: float = 0.03  # relative gain of the slow lighting change
  noise_sigma: Range = (1.5, 3.0)  # grey levels, Gaussian sensor noise
  # --- execution --------------------------------------------------------------------------
  workers: int = 2

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(preset="tiny", num_subjects=4, videos_per_subject=1, num_frames=300,
                        mae_per_minute=8.0, me_per_minute=8.0, min_mae_per_video=1,
                        min_me_per_video=2),
    "default": SynthConfig(),
    "full": SynthConfig(preset="full", num_subjects=22, real_videos=True),
}


def preset(name: str, **overrides: Any) -> SynthConfig:
  """A preset, with fields replaced by ``overrides``."""
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
  return dataclasses.replace(PRESETS[name], **overrides)
