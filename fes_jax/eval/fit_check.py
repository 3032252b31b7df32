"""Fit check: each fold's model spotting its own training subjects, beside its held-out one.

A held-out F1 near zero says that a model did not generalise, not why: a model that cannot
spot even the expressions it was trained on points at the features, labels or training; one
that spots its training expressions but not the held-out subject's is overfitting (too few
examples, or subject-specific cues). For every finished fold of a run (``fold.json``), this
restores the fold's model as ``tools/spot_video.py`` does (its selected epoch, see
fes_jax/spot/model.py), predicts every window of every subject of the fold (the held-out one,
the training ones, the validation ones) from the run's TFRecords, post-processes them with the
run's ``eval`` settings and sums MEGC counts per role over the folds. A training subject counts
once per fold that trained on it. This is a diagnostic, never model selection: it reads the
held-out subject only to report it beside the others.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

from absl import logging
import jax

ROLES = ("held_out", "train", "validation")


def _subject_counts(predict: Callable[[Any], Any], builder: Any, subject: str, *,
                    dataset: Any, eval_cfg: Any, eval_segments: int, num_nodes: int,
                    mesh: Any, out: pathlib.Path) -> dict[str, dict[str, int]]:
  from fes_jax.eval import spotting  # pylint: disable=import-outside-toplevel
  from fes_jax.train import data as data_lib  # pylint: disable=import-outside-toplevel
  from fes_jax.train import step as step_lib  # pylint: disable=import-outside-toplevel

  split = data_lib.join_splits([subject])
  videos = data_lib.split_info(builder, split).videos

  def eval_fn(batch):
    return {"probs": predict(step_lib.windows(batch)[0]), "weight": 0.0}

  preds, _ = data_lib.predict_split(eval_fn, builder, split, videos,
                                    batch_segments=eval_segments, num_nodes=num_nodes, mesh=mesh)
  path = data_lib.save_predictions(out / f"{subject}.npz", preds, subject=subject)
  result, _ = spotting.evaluate_fold(dataset, subject, path, eval_cfg)
  return result["counts"]


def fit_check(workdir: str | pathlib.Path, out_dir: str | pathlib.Path,
              folds: list[int] | None = None) -> dict[str, Any]:
  """Counts and scores per role (``ROLES``), per fold and summed; predictions and
  ``fit_check.json`` are written under ``out_dir`` (``fold_XXX/<subject>.npz``)."""
  from fes_jax import stages  # pylint: disable=import-outside-toplevel
  from fes_jax.context import Context  # pylint: disable=import-outside-toplevel
  from fes_jax.eval import megc  # pylint: disable=import-outside-toplevel
  from fes_jax.spot import model as model_lib  # pylint: disable=import-outside-toplevel
  from fes_jax.train import fold as fold_lib  # pylint: disable=import-outside-toplevel
  from fes_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel

  workdir, out_dir = pathlib.Path(workdir), pathlib.Path(out_dir)
  config = model_lib.load_config(workdir / "config.json")
  ctx = Context(config, workdir)
  dataset = stages.load_dataset(ctx)
  builder = fold_lib.open_records(ctx)
  # One device: the restored model's parameters sit on the default device (a run's records
  # are read as batches on the same device, whatever mesh the run trained on).
  mesh, eval_segments, _, _ = fold_lib.check_setup(config, builder,
                                                   mesh_lib.make_mesh(jax.devices()[:1]))
  t = config.train
  fold_dirs = sorted(p for p in (workdir / "folds").glob("fold_*")
                     if (p / "fold.json").is_file())
  if folds is not None:
    fold_dirs = [p for p in fold_dirs if int(p.name.removeprefix("fold_")) in folds]
  if not fold_dirs:
    raise FileNotFoundError(f"{workdir / 'folds'}: no finished fold (fold.json) to check"
                            + (f" among folds {folds}" if folds is not None else ""))
  totals: dict[str, list[Any]] = {role: [] for role in ROLES}
  per_fold = []
  for fold_dir in fold_dirs:
    record = json.loads((fold_dir / "fold.json").read_text())
    restored = model_lib.load(model_lib.find_run(fold_dir), config)
    predict = restored.predict_fn()
    roles = {"held_out": [record["held_out"]], "train": list(record["train_subjects"]),
             "validation": list(record.get("validation_subjects") or [])}
    entry: dict[str, Any] = {"fold": fold_dir.name, "epoch": restored.epoch,
                             "epoch_source": restored.source, "subjects": roles}
    for role, subjects in roles.items():
      counts = [_subject_counts(predict, builder, s, dataset=dataset, eval_cfg=config.eval,
                                eval_segments=eval_segments, num_nodes=restored.num_nodes,
                                mesh=mesh, out=out_dir / fold_dir.name) for s in subjects]
      if counts:
        summed = megc.add_counts(*counts)
        entry[role] = megc.scores(summed)
        totals[role].append(summed)
    per_fold.append(entry)
    logging.info("fit check %s (epoch %d): ME F1 held out %.3f, training %.3f", fold_dir.name,
                 restored.epoch, entry["held_out"]["me"]["f1"],
                 entry.get("train", {}).get("me", {}).get("f1", float("nan")))
  report = {"workdir": str(workdir), "selection": t.selection,
            "summed": {role: megc.scores(megc.add_counts(*c)) for role, c in totals.items() if c},
            "folds": per_fold,
            "note": "each fold's model on its own subjects; a training subject counts once per "
                    "fold that trained on it; a diagnostic, not model selection"}
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "fit_check.json").write_text(json.dumps(report, indent=2) + "\n")
  return report
