"""The evaluate, aggregate and report stages.

- evaluate: every fold's ``folds/fold_XXX/predictions.npz`` -> intervals -> MEGC counts,
  written to ``folds/fold_XXX/eval.json`` and ``folds/fold_XXX/intervals.csv``.
- aggregate: counts summed over folds -> ``results/metrics.json``; every fold's intervals in
  the original frame numbering -> ``results/submission.csv`` (MEGC ``vid,onset,offset,type``).
- report: ``results/report.md`` (Table VII layout), plots per video, training curves.
With ``train.selection == 'oracle'`` (the papers' protocol) evaluate scores every epoch's
held-out predictions (``folds/fold_XXX/oracle/epoch_XXX.npz``), keeps the epoch with the
best overall F1 per fold, and every output carries "oracle" in its name and content.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterable

from fes_jax.context import Context, write_json_atomic
from fes_jax.eval import megc, report as report_lib, spotting, submission
from fes_jax.eval.megc import Span

ORACLE_DIR = "oracle"  # fes_jax.train.fold.ORACLE_DIR (not imported: keeps eval free of JAX)


def is_oracle(ctx: Context) -> bool:
  """Whether the run uses the papers' oracle selection (outputs named ``*_oracle``)."""
  return ctx.config.train.selection == "oracle"


def output_suffix(ctx: Context) -> str:
  return "_oracle" if is_oracle(ctx) else ""


def fold_dir(ctx: Context, k: int) -> pathlib.Path:
  return ctx.path("folds", f"fold_{k:03d}")


def _subjects(ctx: Context) -> list[str]:
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  return stages.fold_subjects(ctx)


def evaluate(ctx: Context) -> dict[str, Any]:
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  dataset = stages.load_dataset(ctx)
  out = []
  for k, subject in enumerate(_subjects(ctx)):
    d = fold_dir(ctx, k)
    if is_oracle(ctx):
      result, spans = _oracle_fold(dataset, subject, d, ctx.config.eval)
    else:
      result, spans = spotting.evaluate_fold(dataset, subject, d / "predictions.npz",
                                             ctx.config.eval)
    result["selection"] = ctx.config.train.selection
    write_json_atomic(d / f"eval{output_suffix(ctx)}.json", result)
    submission.write_csv(d / f"intervals{output_suffix(ctx)}.csv", spans)
    out.append({"fold": k, "subject": subject, "f1": result["scores"]["overall"]["f1"]})
  return {"folds": out}


def oracle_predictions(d: pathlib.Path) -> dict[int, pathlib.Path]:
  """``{epoch: path}`` of a fold's per-epoch held-out predictions (oracle protocol)."""
  paths = sorted((d / ORACLE_DIR).glob("epoch_*.npz"))
  return {int(p.stem.removeprefix("epoch_")): p for p in paths}


def _oracle_fold(dataset, subject: str, d: pathlib.Path,
                 eval_cfg: Any) -> tuple[dict[str, Any], list[Span]]:
  """The papers' oracle: the epoch whose predictions score the best overall F1 on the
  held-out subject itself (ties: the earliest epoch)."""
  epochs = oracle_predictions(d)
  if not epochs:
    raise FileNotFoundError(f"{d / ORACLE_DIR}: no per-epoch predictions; the oracle "
                            "selection needs a fold trained with train.selection='oracle'")
  best = None
  per_epoch = {}
  for epoch, path in epochs.items():
    result, spans = spotting.evaluate_fold(dataset, subject, path, eval_cfg)
    per_epoch[epoch] = result["scores"]["overall"]["f1"]
    if best is None or per_epoch[epoch] > best[0]["scores"]["overall"]["f1"]:
      best = (result, spans, epoch)
  result, spans, epoch = best
  result.update(oracle_epoch=epoch, oracle_f1_per_epoch=per_epoch,
                note="ORACLE: epoch chosen on the held-out subject's own F1")
  return result, spans


def aggregate(ctx: Context) -> dict[str, Any]:
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  dataset = stages.load_dataset(ctx)
  folds, spans = [], []
  for k, _ in enumerate(_subjects(ctx)):
    d = fold_dir(ctx, k)
    folds.append(json.loads((d / f"eval{output_suffix(ctx)}.json").read_text()))
    spans += submission.read_csv(d / f"intervals{output_suffix(ctx)}.csv")
  total = megc.add_counts(*(f["counts"] for f in folds))
  gt = [s for f in folds for s in spotting.ground_truth(dataset, set(f["videos"]))]
  gt_counts = {t: sum(1 for s in gt if s.type == t) for t in megc.TYPES}
  gt_counts["overall"] = len(gt)
  metrics = {"scores": megc.scores(total), "counts": total, "ground_truth": gt_counts,
             "folds": folds, "selection": ctx.config.train.selection,
             "oracle": is_oracle(ctx)}
  results = ctx.path("results")
  write_json_atomic(results / f"metrics{output_suffix(ctx)}.json", metrics)
  submission.write_csv(results / f"submission{output_suffix(ctx)}.csv",
                       spotting.to_original(dataset, spans))
  s = metrics["scores"]
  return {"f1": {t: round(s[t]["f1"], 4) for t in ("mae", "me", "overall")},
          "oracle": is_oracle(ctx)}


def report(ctx: Context) -> dict[str, Any]:
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  dataset = stages.load_dataset(ctx)
  results = ctx.path("results")
  metrics = json.loads((results / f"metrics{output_suffix(ctx)}.json").read_text())
  plots = []
  budget = ctx.config.eval.plots
  for k, f in enumerate(metrics["folds"]):
    if budget == 0:
      break
    d = fold_dir(ctx, k)
    path = (oracle_predictions(d)[f["oracle_epoch"]] if is_oracle(ctx)
            else d / "predictions.npz")
    preds = spotting.load_predictions(path)
    spans = submission.read_csv(d / f"intervals{output_suffix(ctx)}.csv")
    for video, p in preds.items():
      if budget != -1 and len(plots) >= budget:
        break
      gt = spotting.ground_truth(dataset, {video})
      name = f"plots/{video.replace('/', '__')}{output_suffix(ctx)}.png"
      report_lib.plot_video(results / name, p["probs"], p["frame_numbers"], gt,
                            [s for s in spans if s.video == video], video)
      plots.append(name)
  curves = training_curves(ctx, results, range(len(metrics["folds"])))
  settings = {"dataset": ctx.config.dataset.name,
              "model": ctx.config.model.name, "window": ctx.config.preprocess.window,
              "features": ctx.config.preprocess.temporal,
              "epochs": ctx.config.train.epochs,
              "iou": f"{ctx.config.eval.iou_threshold} "
                     f"({'inclusive' if ctx.config.eval.iou_inclusive else 'exclusive'})"}
  title = f"fes_jax spotting report: {ctx.config.model.name} on {ctx.config.dataset.name}"
  text = report_lib.markdown(title=title, scores=metrics["scores"],
                             ground_truth=metrics["ground_truth"], folds=metrics["folds"],
                             selection=metrics["selection"], settings=settings, plots=plots,
                             curves=curves)
  path = results / f"report{output_suffix(ctx)}.md"
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(text)
  tmp.replace(path)
  return {"report": str(path.relative_to(ctx.workdir)), "plots": len(plots)}


def training_curves(ctx: Context, results: pathlib.Path, folds: Iterable[int]) -> str | None:
  """Plots every fold's per-epoch training loss into ``results``; returns the file name (None
  when no fold has a history)."""
  histories = []
  for k in folds:
    path = fold_dir(ctx, k) / "metrics.json"
    if path.exists():
      hist = json.loads(path.read_text())
      losses = _epoch_losses(hist)
      if losses:
        histories.append((f"fold {k}", losses))
  if not histories:
    return None
  name = f"training_curves{output_suffix(ctx)}.png"
  report_lib.plot_curves(results / name, histories)
  return name


def _epoch_losses(hist: Any) -> list[float]:
  """Per-epoch training loss from a fold's metrics JSON (a list of epoch records)."""
  records = hist.get("epochs", hist) if isinstance(hist, dict) else hist
  out = []
  for r in records if isinstance(records, list) else []:
    for key in ("train_loss", "loss"):
      if isinstance(r, dict) and key in r:
        out.append(float(r[key]))
        break
  return out
