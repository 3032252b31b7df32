"""FESNet evaluation: clip predictions -> per-frame predictions per video -> intervals -> metrics,
and the evaluate, aggregate and report stages of the FESNet task.

Stitching (:func:`stitch`): a fold's ``predictions.npz`` holds, for every valid frame of every
held-out clip, the class probabilities, the frame's number at the clip rate
(``resampled_frames``, 1-based) and the original frame it shows (``frame_numbers``). Clips are
put back in place by their resampled frame; a frame in several clips (``preprocess.stride`` <
``clip_length``) gets the mean of their probabilities. The per-frame prediction is the argmax.

Intervals (:func:`frames_to_spans`): every run of consecutive frames predicted MaE (class 1) is
one MaE interval, every run predicted ME (2) one ME interval (runs shorter than
``eval.min_frames`` are dropped). A run's onset / offset are the original frames its first /
last frame shows, so intervals are in the original numbering (at SAMM's 200 -> 60 fps an onset
can be up to 3 original frames after the true one: the frames in between are not in the clips).
Ground truth: the dataset's annotated intervals in the original numbering (read with
``fps_divisor=1``). MEGC counts (``eval.megc``): TP / FP / FN per type, summed over the folds'
videos before precision / recall / F1. Frames with both labels (an ME inside a MaE) are
labelled MaE in the clips (``preprocess.labels.contrastive_classes``), so such MEs can only be
missed.

Frame-level metrics (paper section 4.2, ``eval.frame_metrics``): frame accuracy over every
frame of every held-out video (pooled); edit score per video on the stitched sequence (mean over
videos), and per clip on each clip's own prediction (mean over clips; the paper's inputs are
32-frame intervals). Accuracy is the plain share of correct frames (the paper's eq. 6 as
printed, |O n Y| / (|O u Y| - |O n Y|), is not a share and cannot be computed as written).

Outputs: ``folds/fold_XXX/eval.json`` and ``intervals.csv`` (evaluate), ``results/metrics.json``
and ``results/submission.csv`` (``vid,onset,offset,type``, original numbering; aggregate),
``results/report.md`` with plots (report). With ``train.selection='oracle'`` every name gets
``_oracle`` and every output says so.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Iterable

import numpy as np

from fes_jax.context import Context, write_json_atomic
from fes_jax.eval import frame_metrics, megc, report as report_lib, spotting, submission
from fes_jax.eval.megc import Span
from fes_jax.eval.stages import (ORACLE_DIR, fold_dir, is_oracle, oracle_predictions,
                                 output_suffix, training_curves)

CLASS_TYPES = {1: "mae", 2: "me"}
PREDICTIONS = "predictions.npz"


@dataclasses.dataclass
class VideoFrames:
  """One video's stitched per-frame predictions (at the clip rate, frames in order)."""

  video: str
  resampled_frames: np.ndarray  # (N,) 1-based, increasing
  frame_numbers: np.ndarray  # (N,) original frame each shows
  probs: np.ndarray  # (N, K) mean over the clips holding the frame
  labels: np.ndarray  # (N,) ground-truth class

  @property
  def pred(self) -> np.ndarray:
    return np.argmax(self.probs, axis=-1).astype(np.int32)


def load_predictions(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    out = {k: f[k] for k in f.files}
  out["video"] = out["video"].astype(str)
  return out


def stitch(preds: dict[str, np.ndarray]) -> dict[str, VideoFrames]:
  """Per-frame predictions of every video from its clips' frames (see the module docstring)."""
  out = {}
  videos = preds["video"]
  for name in sorted(set(videos.tolist())):
    sel = videos == name
    frames = preds["resampled_frames"][sel]
    uniq, inverse = np.unique(frames, return_inverse=True)
    k = preds["probs"].shape[-1]
    sums = np.zeros((len(uniq), k), np.float64)
    np.add.at(sums, inverse, preds["probs"][sel])
    counts = np.bincount(inverse, minlength=len(uniq))
    first = np.zeros(len(uniq), np.int64)
    first[inverse[::-1]] = np.flatnonzero(sel)[::-1]  # a row of each frame
    labels, originals = preds["labels"][first], preds["frame_numbers"][first]
    for key, ref in (("labels", labels), ("frame_numbers", originals)):
      if not np.array_equal(ref[inverse], preds[key][sel]):
        raise ValueError(f"video {name}: clips disagree on the {key} of a frame")
    out[name] = VideoFrames(name, uniq.astype(np.int32), originals.astype(np.int32),
                            (sums / counts[:, None]).astype(np.float32),
                            labels.astype(np.int32))
  return out


def runs(labels_N: np.ndarray, frames_N: np.ndarray, code: int) -> list[tuple[int, int]]:
  """``(first, last)`` row indices of each run of ``code`` over consecutive ``frames_N``."""
  hit = np.asarray(labels_N) == code
  out, start = [], None
  for i, h in enumerate(hit):
    if h and start is not None and frames_N[i] != frames_N[i - 1] + 1:
      out.append((start, i - 1))  # a gap in the frames ends a run
      start = None
    if h and start is None:
      start = i
    elif not h and start is not None:
      out.append((start, i - 1))
      start = None
  if start is not None:
    out.append((start, len(hit) - 1))
  return out


def frames_to_spans(video: str, labels_N: np.ndarray, resampled_N: np.ndarray,
                    original_N: np.ndarray, min_frames: int = 1) -> list[Span]:
  """MaE / ME intervals (original numbering) from per-frame classes (module docstring)."""
  spans = []
  for code, kind in CLASS_TYPES.items():
    for a, b in runs(labels_N, resampled_N, code):
      if b - a + 1 >= min_frames:
        spans.append(Span(video, int(original_N[a]), int(original_N[b]), kind))
  return sorted(spans, key=lambda s: (s.onset, s.offset, s.type))


def clip_edit_scores(preds: dict[str, np.ndarray]) -> list[float]:
  """Edit score of every clip's own prediction against its labels (valid frames)."""
  pred = np.argmax(preds["probs"], axis=-1)
  key = np.char.add(np.char.add(preds["video"], ":"), preds["clip"].astype(str))
  out = []
  for k in np.unique(key):
    sel = np.flatnonzero(key == k)
    sel = sel[np.argsort(preds["position"][sel], kind="stable")]
    out.append(frame_metrics.edit_score(pred[sel], preds["labels"][sel]))
  return out


def conventions(cfg: Any) -> megc.MegcConventions:
  return spotting.conventions(cfg)


def evaluate_predictions(dataset: Any, videos: Iterable[str], preds: dict[str, np.ndarray],
                         eval_cfg: Any) -> tuple[dict[str, Any], list[Span]]:
  """Counts and frame metrics of one fold's held-out ``videos``, and its intervals."""
  videos = sorted(set(videos))
  unknown = sorted(set(preds["video"].tolist()) - set(videos))
  if unknown:
    raise ValueError(f"predictions of videos {unknown} that this fold does not hold out")
  stitched = stitch(preds)
  spans: list[Span] = []
  correct = total = 0
  edits = {}
  for name, v in stitched.items():
    pred = v.pred
    spans += frames_to_spans(name, pred, v.resampled_frames, v.frame_numbers,
                             eval_cfg.min_frames)
    known = v.labels >= 0
    correct += int((pred[known] == v.labels[known]).sum())
    total += int(known.sum())
    edits[name] = frame_metrics.edit_score(pred[known], v.labels[known])
  gt = spotting.ground_truth(dataset, set(videos))
  c = megc.counts(gt, spans, conventions(eval_cfg))
  clip_edits = clip_edit_scores(preds)
  result = {
      "counts": c, "scores": megc.scores(c), "videos": videos,
      "videos_predicted": sorted(stitched),
      "ground_truth": {t: sum(1 for s in gt if s.type == t) for t in megc.TYPES},
      "frames": {"correct": correct, "total": total},
      "frame_accuracy": correct / total if total else 0.0,
      "edit_per_video": edits,
      "edit_video": float(np.mean(list(edits.values()))) if edits else 0.0,
      "edit_clip_sum": float(np.sum(clip_edits)), "clips": len(clip_edits),
      "edit_clip": float(np.mean(clip_edits)) if clip_edits else 0.0,
  }
  return result, spans


# ---------------------------------------------------------------------------- stages


def _evaluate_fold(ctx: Context, dataset: Any, spec: Any, d: pathlib.Path
                   ) -> tuple[dict[str, Any], list[Span], pathlib.Path]:
  if not is_oracle(ctx):
    path = d / PREDICTIONS
    result, spans = evaluate_predictions(dataset, spec.test_videos, load_predictions(path),
                                         ctx.config.eval)
    return result, spans, path
  epochs = oracle_predictions(d)
  if not epochs:
    raise FileNotFoundError(f"{d / ORACLE_DIR}: no per-epoch predictions; the oracle "
                            "selection needs a fold trained with train.selection='oracle'")
  best, per_epoch = None, {}
  for epoch, path in epochs.items():
    result, spans = evaluate_predictions(dataset, spec.test_videos, load_predictions(path),
                                         ctx.config.eval)
    per_epoch[epoch] = result["scores"]["overall"]["f1"]
    if best is None or per_epoch[epoch] > best[0]["scores"]["overall"]["f1"]:
      best = (result, spans, path, epoch)
  result, spans, path, epoch = best
  result.update(oracle_epoch=epoch, oracle_f1_per_epoch=per_epoch,
                note="ORACLE: epoch chosen on the held-out videos' own F1")
  return result, spans, path


def evaluate(ctx: Context) -> dict[str, Any]:
  from fes_jax import stages  # pylint: disable=import-outside-toplevel
  from fes_jax.fesnet import stages as fesnet_stages  # pylint: disable=import-outside-toplevel

  dataset = stages.load_dataset(ctx)
  out = []
  for spec in fesnet_stages.fold_plan(ctx):
    d = fold_dir(ctx, spec.index)
    result, spans, path = _evaluate_fold(ctx, dataset, spec, d)
    result.update(fold=spec.index, name=spec.name, selection=ctx.config.train.selection,
                  predictions=str(path.relative_to(ctx.workdir)))
    write_json_atomic(d / f"eval{output_suffix(ctx)}.json", result)
    submission.write_csv(d / f"intervals{output_suffix(ctx)}.csv", spans)
    out.append({"fold": spec.index, "name": spec.name,
                "f1": round(result["scores"]["overall"]["f1"], 4),
                "frame_accuracy": round(result["frame_accuracy"], 4)})
  return {"folds": out}


def aggregate(ctx: Context) -> dict[str, Any]:
  from fes_jax.fesnet import stages as fesnet_stages  # pylint: disable=import-outside-toplevel

  folds, spans = [], []
  for spec in fesnet_stages.fold_plan(ctx):
    d = fold_dir(ctx, spec.index)
    folds.append(json.loads((d / f"eval{output_suffix(ctx)}.json").read_text()))
    spans += submission.read_csv(d / f"intervals{output_suffix(ctx)}.csv")
  total = megc.add_counts(*(f["counts"] for f in folds))
  gt_counts = {t: sum(f["ground_truth"][t] for f in folds) for t in megc.TYPES}
  gt_counts["overall"] = sum(gt_counts[t] for t in megc.TYPES)
  correct = sum(f["frames"]["correct"] for f in folds)
  frames = sum(f["frames"]["total"] for f in folds)
  video_edits = [e for f in folds for e in f["edit_per_video"].values()]
  clips = sum(f["clips"] for f in folds)
  metrics = {
      "scores": megc.scores(total), "counts": total, "ground_truth": gt_counts,
      "frame_accuracy": correct / frames if frames else 0.0,
      "edit_video": float(np.mean(video_edits)) if video_edits else 0.0,
      "edit_clip": sum(f["edit_clip_sum"] for f in folds) / clips if clips else 0.0,
      "frames": {"correct": correct, "total": frames}, "clips": clips,
      "folds": folds, "selection": ctx.config.train.selection, "oracle": is_oracle(ctx),
      "protocol": ctx.config.loso.protocol, "task": "fesnet",
      "iou": {"threshold": ctx.config.eval.iou_threshold,
              "inclusive": ctx.config.eval.iou_inclusive},
  }
  results = ctx.path("results")
  write_json_atomic(results / f"metrics{output_suffix(ctx)}.json", metrics)
  submission.write_csv(results / f"submission{output_suffix(ctx)}.csv", spans)
  s = metrics["scores"]
  return {"f1": {t: round(s[t]["f1"], 4) for t in ("mae", "me", "overall")},
          "frame_accuracy": round(metrics["frame_accuracy"], 4),
          "edit_video": round(metrics["edit_video"], 2),
          "edit_clip": round(metrics["edit_clip"], 2), "oracle": is_oracle(ctx)}


def markdown(*, title: str, metrics: dict[str, Any], settings: dict[str, Any],
             plots: list[str], curves: str | None) -> str:
  """The report: Table VII layout for the MEGC counts, frame metrics, folds, settings."""
  oracle = metrics["selection"] == "oracle"
  out = [f"# {title}" + (" (ORACLE)" if oracle else ""), ""]
  if oracle:
    out += [report_lib.ORACLE_NOTE.replace("held-out subject's own test F1",
                                           "held-out videos' own F1"), ""]
  iou = metrics["iou"]
  length = "inclusive" if iou["inclusive"] else "exclusive"
  protocol = {"kfold5": "five folds by video (the paper's protocol)",
              "loso": "leave one subject out"}.get(metrics["protocol"], metrics["protocol"])
  out += [f"Model selection: `{metrics['selection']}`"
          + ("" if oracle else " (the held-out videos are never looked at)")
          + f". Folds: `{metrics['protocol']}`, {protocol}.", "",
          "## Spotting (MEGC, TP/FP/FN summed over all folds)", "",
          "Intervals are runs of frames predicted MaE / ME (per-frame argmax of the stitched "
          f"clips), in the original frame numbering; IoU {iou['threshold']} ({length}).",
          "", report_lib.table_vii(metrics["scores"], metrics["ground_truth"]), "",
          "## Frame-level (paper section 4.2)", "",
          "| Acc (%) | Edit per video | Edit per clip | frames | clips |",
          "|---:|---:|---:|---:|---:|",
          f"| {100 * metrics['frame_accuracy']:.2f} | {metrics['edit_video']:.2f} | "
          f"{metrics['edit_clip']:.2f} | {metrics['frames']['total']} | {metrics['clips']} |",
          "", "## Per fold", "",
          "| fold | held out | MaE TP/FP/FN | ME TP/FP/FN | overall F1 | Acc (%) | Edit (video) |",
          "|---|---|---|---|---|---|---|"]
  for f in metrics["folds"]:
    c = f["counts"]
    name = f["name"] + (f" (oracle epoch {f['oracle_epoch']})" if "oracle_epoch" in f else "")
    out.append(f"| {f['fold']} | {name} | {c['mae']['tp']}/{c['mae']['fp']}/{c['mae']['fn']} | "
               f"{c['me']['tp']}/{c['me']['fp']}/{c['me']['fn']} | "
               f"{f['scores']['overall']['f1']:.4f} | {100 * f['frame_accuracy']:.2f} | "
               f"{f['edit_video']:.2f} |")
  return "\n".join(out + report_lib.report_tail(settings, curves, plots)) + "\n"


def plot_video(path: str | pathlib.Path, v: VideoFrames, gt: list[Span], pred: list[Span],
               title: str) -> None:
  """MaE and ME probabilities per frame (original numbering), ground truth shaded, predicted
  intervals as bars."""
  curves = {kind: [(v.probs[:, code], f"p({kind})", report_lib.TYPE_COLORS[kind], 1.0)]
            for code, kind in CLASS_TYPES.items()}
  report_lib.plot_spans(path, v.frame_numbers, curves, gt, pred, title,
                        "shaded = ground truth, black bars = predicted intervals",
                        xlabel="frame (original numbering)", height=4.5)


def report(ctx: Context) -> dict[str, Any]:
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  dataset = stages.load_dataset(ctx)
  results = ctx.path("results")
  metrics = json.loads((results / f"metrics{output_suffix(ctx)}.json").read_text())
  plots: list[str] = []
  budget = ctx.config.eval.plots
  for f in metrics["folds"]:
    if budget == 0 or (budget > 0 and len(plots) >= budget):
      break
    d = fold_dir(ctx, f["fold"])
    stitched = stitch(load_predictions(ctx.workdir / f["predictions"]))
    spans = submission.read_csv(d / f"intervals{output_suffix(ctx)}.csv")
    for video, v in stitched.items():
      if budget > 0 and len(plots) >= budget:
        break
      name = f"plots/{video.replace('/', '__')}{output_suffix(ctx)}.png"
      plot_video(results / name, v, spotting.ground_truth(dataset, {video}),
                 [s for s in spans if s.video == video], video)
      plots.append(name)
  curves = training_curves(ctx, results, [f["fold"] for f in metrics["folds"]])
  c = ctx.config
  settings = {"dataset": c.dataset.name, "model": f"fesnet ({c.model.get('preset', '')})",
              "image": f"{c.model.image_size} x {c.model.image_size}",
              "clip": f"{c.preprocess.clip_length} frames, stride "
                      f"{c.preprocess.stride or c.preprocess.clip_length}",
              "target_fps": c.preprocess.target_fps or "native",
              "epochs": c.train.epochs, "batch_clips": c.train.batch_clips,
              "optimizer": f"{c.train.optimizer} lr {c.train.learning_rate}",
              "loss": f"gamma {c.train.gamma}, lsdm_form {c.train.lsdm_form}, "
                      f"ce_on {c.train.ce_on}",
              "training clips": c.train.clips, "min_frames": c.eval.min_frames}
  title = f"fes_jax FESNet report: fesnet on {c.dataset.name}"
  text = markdown(title=title, metrics=metrics, settings=settings, plots=plots, curves=curves)
  path = results / f"report{output_suffix(ctx)}.md"
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(text)
  tmp.replace(path)
  return {"report": str(path.relative_to(ctx.workdir)), "plots": len(plots)}
