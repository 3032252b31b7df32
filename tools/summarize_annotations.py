"""Prints one JSON object summarising an annotation file.

  python tools/summarize_annotations.py --format=casme2 "CAS(ME)^2code_final.xlsx"
  python tools/summarize_annotations.py --format=samm_lv --fps_divisor=7 \
      SAMM_LongVideos_Release.xlsx --frame_counts=video_frame_counts.txt

Keys: subjects, videos, mae, me, duration_frames per type (min / median / max), video_frames,
and ``quirks``: how many rows each quirk policy touched (see fes_jax/data/policies.py).
"""

import json
import sys

from absl import app
from absl import flags

from fes_jax.data import readers
from fes_jax.data.errors import DataError
from fes_jax.data.policies import Policies
from fes_jax.data.summary import summarize

_FORMAT = flags.DEFINE_enum("format", None, readers.FORMATS, "Annotation file format.")
_FPS_DIVISOR = flags.DEFINE_integer("fps_divisor", 1, "Keep every N-th frame (SAMM-LV: 7 or 8).")
_FRAME_COUNTS = flags.DEFINE_string("frame_counts", None, "Frame-count file, optional.")
_FRAMES_ROOT = flags.DEFINE_string("frames_root", None, "Raw frame folder, optional.")
_POLICY = flags.DEFINE_multi_string(
    "policy", [], "Quirk policy override NAME=VALUE, e.g. missing_offset=apex_plus_20.")
_INDEX_BASE = flags.DEFINE_integer("index_base", 1, "csv format: 0 or 1-based frame numbers.")
_CSV_FPS = flags.DEFINE_float("csv_fps", 30.0, "csv format: frame rate of its numbering.")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give exactly one annotation file")
  overrides = {}
  for item in _POLICY.value:
    name, _, value = item.partition("=")
    overrides[name] = value
  try:
    policies = Policies.from_config({**overrides, "fps_divisor": _FPS_DIVISOR.value})
    options = {}
    if _FORMAT.value == "csv":
      options = {"index_base": _INDEX_BASE.value, "fps": _CSV_FPS.value}
    dataset = readers.read_annotations(_FORMAT.value, argv[1], policies=policies,
                                       frames_root=_FRAMES_ROOT.value,
                                       frame_counts=_FRAME_COUNTS.value, **options)
  except (DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summarize(dataset), indent=2))
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("format")
  app.run(main)
