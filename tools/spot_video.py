"""Spots expressions in your own video with a trained fold; writes a CSV, a plot, a summary.

  python tools/spot_video.py --video=talk.mp4 --checkpoint=workdir/demo/folds/fold_000
  python tools/spot_video.py --video=frames/ --fps=30 --checkpoint=DIR/checkpoints/5 --out=spots

--video: a video file (anything OpenCV decodes) or a folder of numbered images (img1.jpg ...).
--checkpoint: a fold directory (<workdir>/folds/fold_XXX), its checkpoints/ directory, or one
epoch's (checkpoints/<epoch>). The run's config (<workdir>/config.json) gives the SW-MRO
settings, the model and the post-processing. Outputs, in --out (default <video stem>_spots/
beside the video): intervals.csv (MEGC vid,onset,offset,type, frames 1-based),
probabilities.png, probabilities.npz, landmarks.npy, summary.json. Prints the summary.
"""

import json
import os
import sys

from absl import app
from absl import flags

from fes_jax.data.errors import DataError

_VIDEO = flags.DEFINE_string("video", None, "Video file or folder of numbered frames.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Fold directory, its checkpoints/ "
                                  "directory, or an epoch's checkpoint directory.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <video stem>_spots/ beside "
                           "the video).")
_CONFIG = flags.DEFINE_string("config", None, "The run's config.json, or configs/x.py[:args] "
                              "(default: config.json of the workdir above --checkpoint).")
_EPOCH = flags.DEFINE_integer("epoch", None, "Checkpoint epoch (default: the fold's selected "
                              "epoch from fold.json, else the newest).")
_LANDMARKS = flags.DEFINE_string("landmarks", "dlib", "'dlib', or a landmark file: .npy "
                                 "(N, 68, 2) x,y pixels or an OpenFace .csv, one row a frame.")
_FPS = flags.DEFINE_float("fps", None, "Frame rate of a frame folder (a video file's own is "
                          "read from it).")
_WORKERS = flags.DEFINE_integer("workers", min(4, os.cpu_count() or 1),
                                "Processes for the optical flow.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from fes_jax.spot import spot_video  # pylint: disable=import-outside-toplevel

  try:
    summary = spot_video(_VIDEO.value, _CHECKPOINT.value, _OUT.value, config=_CONFIG.value,
                         epoch=_EPOCH.value, landmarks=_LANDMARKS.value, fps=_FPS.value,
                         workers=_WORKERS.value, progress=_PROGRESS.value)
  except (DataError, FileNotFoundError, ValueError) as e:
    print(f"spot_video: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["video", "checkpoint"])
  app.run(main)
