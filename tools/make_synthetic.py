"""Generates the synthetic long-video dataset in the CAS(ME)^2 layout.

  python tools/make_synthetic.py --out=/tmp/synth --preset=tiny --seed=0
  python tools/make_synthetic.py --out=workdir/data --preset=default --workers=2

Presets (fes_jax/synthetic/config.py): tiny (4 subjects x 1 video x 300 frames), default
(8 x 2 x 1200), full (the 98 real CAS(ME)^2 videos: 22 subjects, real lengths and counts).
A rerun into the same folder skips complete videos. Prints a JSON summary.
"""

import json
import sys
import time

from absl import app
from absl import flags

from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import generate

_OUT = flags.DEFINE_string("out", None, "Output folder (created).")
_PRESET = flags.DEFINE_enum("preset", "default", sorted(config_lib.PRESETS), "Size preset.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; output is deterministic per seed.")
_WORKERS = flags.DEFINE_integer("workers", None, "Parallel processes (default: the preset's, 2).")
_FRAMES = flags.DEFINE_integer("frames", None, "Override frames per video (not with full).")
_SUBJECTS = flags.DEFINE_integer("subjects", None, "Override the number of subjects (<= 22).")
_VIDEOS = flags.DEFINE_integer("videos_per_subject", None, "Override videos per subject (<= 9).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  overrides = {}
  for flag, field in ((_FRAMES, "num_frames"), (_SUBJECTS, "num_subjects"),
                      (_VIDEOS, "videos_per_subject")):
    if flag.value is not None:
      overrides[field] = flag.value
  try:
    cfg = config_lib.preset(_PRESET.value, **overrides)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  start = time.time()
  summary = generate.generate(_OUT.value, cfg, _SEED.value, workers=_WORKERS.value,
                              show_progress=_PROGRESS.value)
  summary["wall_seconds"] = round(time.time() - start, 2)
  if summary["rendered_frames"]:
    summary["frames_per_second"] = round(summary["rendered_frames"] / summary["wall_seconds"], 1)
  summary["out"] = _OUT.value
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
