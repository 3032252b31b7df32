"""Fit check of a finished run: each fold's model on its training subjects and its held-out one.

  python tools/fit_check.py --workdir=workdir/abl_sw [--folds=0,1] [--out=DIR]

For every finished fold (``folds/fold_XXX/fold.json``), restores the fold's model (its selected
epoch, as tools/spot_video.py does), predicts every window of its held-out, training and
validation subjects from the run's TFRecords, spots intervals with the run's ``eval`` settings
and prints one JSON object: MEGC TP / FP / FN, precision, recall and F1 per role (``held_out``,
``train``, ``validation``), summed over the folds and per fold. A model that spots its training
expressions but not the held-out subject's is overfitting; one that spots neither is not
learning them. A diagnostic, not model selection (fes_jax/eval/fit_check.py). Writes the
predictions (``fold_XXX/<subject>.npz``) and ``fit_check.json`` to --out (default
``<workdir>/results/fit_check``).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir with finished folds.")
_FOLDS = flags.DEFINE_list("folds", None, "Fold indices to check (default: every finished one).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default <workdir>/results/fit_check).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from fes_jax.eval import fit_check  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(_WORKDIR.value)
  if not (workdir / "config.json").is_file():
    raise app.UsageError(f"{workdir / 'config.json'} not found: not a fes_jax workdir")
  try:
    folds = None if _FOLDS.value is None else [int(f) for f in _FOLDS.value]
  except ValueError:
    raise app.UsageError(f"--folds takes fold indices, got {_FOLDS.value}") from None
  out = pathlib.Path(_OUT.value) if _OUT.value else workdir / "results" / "fit_check"
  try:
    report = fit_check.fit_check(workdir, out, folds)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  app.run(main)
