"""The stages of a MER run (``config.task == 'mer'``; sequenced by ``fes_jax.pipeline``).

  prepare_data  synthetic clips generated (``dataset.name == 'synthetic'``) or the coding
                files read; ``<workdir>/data_summary.json`` (clips per dataset / subject /
                class, the folds).
  preprocess    MOL inputs per labelled clip (alignment, T sampled frames, flow and landmark
                targets; ``<workdir>/mer_prep``), then per-subject TFRecords
                (``<workdir>/tfrecords``).
  train         one LOSO fold per stage (``fes_jax.mer.train``): per-fold orbax checkpoints
                with resume, last-epoch selection, predictions of the held-out subject.
  evaluate      every fold's per-clip predictions -> the confusion matrix summed over folds ->
                Acc, WF1, UF1, UAR (``fes_jax.mer.metrics``); ``results/metrics.json``,
                ``results/predictions.csv``.
  report        ``results/report.md`` and ``results/report.json``: the four metrics, the
                summed confusion matrix, per-class and per-fold tables, the settings, and the
                training curves (``results/curves.png``).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from absl import logging

from fes_jax.context import Context, Stage, write_json_atomic
from fes_jax.mer import data as data_lib
from fes_jax.mer import metrics as mer_metrics


def fold_subjects(ctx: Context) -> list[str]:
  """One held-out (record) subject per fold, in fold order."""
  return data_lib.fold_subjects(ctx)


def prepare_data(ctx: Context) -> dict[str, Any]:
  if ctx.config.dataset.name == "synthetic":
    logging.info("generating synthetic ME clips into %s", data_lib.synthetic_root(ctx))
    data_lib.generate_synthetic(ctx)
  summary = data_lib.summary(ctx)
  write_json_atomic(ctx.path("data_summary.json"), summary)
  logging.info("MER data: %d clips, %d labelled, %d folds", summary["clips"],
               summary["labelled_clips"], len(summary["folds"]))
  return {"summary": "data_summary.json", "clips": summary["clips"],
          "labelled_clips": summary["labelled_clips"], "folds": len(summary["folds"])}


def preprocess(ctx: Context) -> dict[str, Any]:
  return data_lib.preprocess(ctx)


def _train_fold(ctx: Context) -> dict[str, Any]:
  from fes_jax.mer import train  # pylint: disable=import-outside-toplevel

  return train.train_stage(ctx)


def _fold_dir(ctx: Context, k: int):
  return ctx.path("folds", f"fold_{k:03d}")


def evaluate(ctx: Context) -> dict[str, Any]:
  """The folds' predictions -> one confusion matrix summed over folds -> the metrics."""
  from fes_jax.mer.config import class_names  # pylint: disable=import-outside-toplevel

  names = list(class_names(ctx.config))
  folds, matrices, rows = [], [], []
  for k, subject in enumerate(fold_subjects(ctx)):
    pred = json.loads((_fold_dir(ctx, k) / "predictions.json").read_text())
    if pred["held_out"] != subject or pred["classes"] != names:
      raise ValueError(f"fold {k}: predictions are of {pred['held_out']!r} / "
                       f"{pred['classes']}, expected {subject!r} / {names}")
    cm = mer_metrics.confusion_matrix([c["label"] for c in pred["clips"]],
                                      [c["pred"] for c in pred["clips"]], len(names))
    matrices.append(cm)
    fold_json = json.loads((_fold_dir(ctx, k) / "fold.json").read_text())
    folds.append({"fold": k, "subject": subject, "clips": int(cm.sum()),
                  "correct": int(cm.trace()), "epoch": pred["epoch"],
                  "acc": float(cm.trace() / cm.sum()) if cm.sum() else 0.0,
                  "final_train_loss": fold_json.get("final_loss"),
                  "confusion_matrix": cm.tolist()})
    rows += [{"fold": k, **c} for c in pred["clips"]]
  total = mer_metrics.sum_matrices(matrices)
  result = mer_metrics.report(total, names)
  # Per source dataset (the composite protocol's CASME II / SAMM / SMIC columns).
  datasets = sorted({r["dataset"] for r in rows})
  if len(datasets) > 1:
    result["per_dataset"] = {
        d: mer_metrics.scores(mer_metrics.confusion_matrix(
            [r["label"] for r in rows if r["dataset"] == d],
            [r["pred"] for r in rows if r["dataset"] == d], len(names))) for d in datasets}
  result.update(folds=folds, selection=ctx.config.train.selection,
                note="confusion matrix summed over all LOSO folds; last-epoch models; the "
                     "held-out subject is never used for selection")
  results = ctx.path("results")
  write_json_atomic(results / "metrics.json", result)
  buf = io.StringIO()
  fields = ("fold", "dataset", "subject", "clip", "emotion", "label", "label_name", "pred",
            "pred_name", "num_samples", "probs")
  w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
  w.writeheader()
  for r in rows:
    w.writerow({**r, "probs": " ".join(f"{p:.4f}" for p in r["probs"])})
  (results / "predictions.csv").write_text(buf.getvalue())
  s = result["scores"]
  logging.info("MER: Acc %.4f WF1 %.4f UF1 %.4f UAR %.4f over %d clips", s["acc"], s["wf1"],
               s["uf1"], s["uar"], s["clips"])
  return {k: round(v, 4) for k, v in s.items() if k != "clips"} | {"clips": s["clips"]}


def settings(config) -> dict[str, Any]:
  """The choices a reader of the report needs, by name."""
  m, t, p, d, loss = config.model, config.train, config.preprocess, config.data, config.loss
  return {
      "dataset": config.dataset.name, "classes": d.label, "preset": m.preset,
      "model size": m.size, "image size": m.image_size,
      "FCC / CCC / shared F5C": f"{m.fcc_variant} / {m.ccc_variant} / {m.shared_f5c}",
      "loss weights": f"{loss.preset}: mer {loss.mer}, flow {loss.flow}"
                      f"{' / P' if loss.flow_divide_by_pairs else ''}, landmark "
                      f"{loss.landmark}{' (batch sum)' if loss.landmark_batch_sum else ''}",
      "optimiser": f"{t.optimizer}, lr {t.learning_rate}, betas {tuple(t.betas)}, weight "
                   f"decay {t.weight_decay}",
      "batch": t.batch_size, "epochs / num_steps": f"{t.epochs} / {t.num_steps}",
      "selection": t.selection,
      "frames": f"T={p.num_frames}, {p.sampling}, align {p.align} {p.align_size} px, crop "
                f"{d.crop_size}, flip {d.flip_prob}, frame norm {d.frame_norm}",
      "flow targets": p.flow_method, "seed": t.seed,
  }


def report(ctx: Context) -> dict[str, Any]:
  from fes_jax.eval import report as report_lib  # pylint: disable=import-outside-toplevel

  results = ctx.path("results")
  metrics = json.loads((results / "metrics.json").read_text())
  names, s = metrics["classes"], metrics["scores"]
  histories = []
  for f in metrics["folds"]:
    path = _fold_dir(ctx, f["fold"]) / "metrics.json"
    if path.is_file():
      epochs = json.loads(path.read_text())["epochs"]
      histories.append((f["subject"], [e["train_loss"] for e in epochs]))
  curves = None
  if histories:
    report_lib.plot_curves(results / "curves.png", histories)
    curves = "curves.png"
  cfg = settings(ctx.config)
  out = [f"# MOL micro-expression recognition: {ctx.config.dataset.name}, "
         f"{len(names)} classes", "",
         f"Model selection: `{metrics['selection']}` (the held-out subject is never looked "
         "at). Leave-one-subject-out; the confusion matrix is summed over all folds and "
         "every metric is computed from the sum.", "",
         "| Acc | WF1 | UF1 | UAR | clips |", "|---|---|---|---|---|",
         f"| {s['acc']:.4f} | {s['wf1']:.4f} | {s['uf1']:.4f} | {s['uar']:.4f} | "
         f"{s['clips']} |", "", "## Confusion matrix (summed over folds)", "",
         mer_metrics.markdown_matrix(metrics["confusion_matrix"], names), "",
         "## Per class", "", "| class | clips | TP | FP | FN | precision | recall | F1 |",
         "|---|---|---|---|---|---|---|---|"]
  for name in names:
    c = metrics["per_class"][name]
    out.append(f"| {name} | {c['support']} | {c['tp']} | {c['fp']} | {c['fn']} | "
               f"{c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} |")
  if "per_dataset" in metrics:
    out += ["", "## Per source dataset", "", "| dataset | clips | Acc | WF1 | UF1 | UAR |",
            "|---|---|---|---|---|---|"]
    for d, v in metrics["per_dataset"].items():
      out.append(f"| {d} | {v['clips']} | {v['acc']:.4f} | {v['wf1']:.4f} | {v['uf1']:.4f} "
                 f"| {v['uar']:.4f} |")
  out += ["", "## Per fold", "",
          "| fold | held-out subject | clips | correct | Acc | epoch | final train loss |",
          "|---|---|---|---|---|---|---|"]
  for f in metrics["folds"]:
    loss = f["final_train_loss"]
    out.append(f"| {f['fold']} | {f['subject']} | {f['clips']} | {f['correct']} | "
               f"{f['acc']:.4f} | {f['epoch']} | "
               f"{'' if loss is None else f'{loss:.4f}'} |")
  out += report_lib.report_tail(cfg, curves, curves_alt="training loss per fold")
  (results / "report.md").write_text("\n".join(out) + "\n")
  write_json_atomic(results / "report.json", {**metrics, "settings": cfg})
  return {"report": "results/report.md", "json": "results/report.json"}


STAGES = (
    Stage("prepare_data", prepare_data),
    Stage("preprocess", preprocess),
    Stage("train", _train_fold, per_fold=True),
    Stage("evaluate", evaluate),
    Stage("report", report),
)
# Stages that need every fold: a single-fold run (cluster job array) stops before them.
AFTER_TRAINING = ("evaluate", "report")
