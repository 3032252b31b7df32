"""Runs a fes_jax job: ``python -m fes_jax.main --config=configs/X.py[:args] --workdir=DIR``.

Override any config field with ``--config.section.field=value``. The process re-executes
itself once with glibc malloc settings that keep XLA's buffers mapped between steps
(``fes_jax/malloc_tuning.py``; ``FES_JAX_MALLOC_TUNING=0`` to skip). ``--fold=K`` runs only fold
K's training (for cluster job arrays); rerunning the same command resumes where it stopped.
"""

import sys

from fes_jax import malloc_tuning

if __name__ == "__main__":
  malloc_tuning.reexec_with_tunables()  # before the heavy imports; see the module

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fes_jax import pipeline
from fes_jax.data.errors import DataError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/spotformer_synthetic.py[:preset=tiny].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, features, checkpoints, "
                               "results (see WORKSPACE.md).")
_FOLD = flags.DEFINE_integer("fold", None, "Run only this LOSO fold (0-based); overrides "
                             "config.loso.fold.")
_STOP_AFTER = flags.DEFINE_string("stop_after", None, "End the run after this stage (e.g. "
                                  "preprocess, to prepare the data once before fold jobs).")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_NOT_IMPLEMENTED = 3


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    result = pipeline.run(_CONFIG.value, _WORKDIR.value, fold=_FOLD.value,
                          stop_after=_STOP_AFTER.value)
  except pipeline.StageNotImplemented as e:
    logging.error("%s", e)
    print(f"\nfes_jax stopped: {e}.\nThe stages before it are complete and stay in "
          f"{_WORKDIR.value}; nothing was written for this stage.", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED
  except (pipeline.ConfigMismatch, DataError, ValueError) as e:
    # Bad input or config: the message names the file / sheet / row / field or the option.
    print(f"fes_jax: error: {e}", file=sys.stderr)
    return 2
  print(f"fes_jax: done {result['done']}, already complete {result['skipped']}")
  return 0


if __name__ == "__main__":
  app.run(main)
