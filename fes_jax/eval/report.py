"""The run's report: a markdown table in the layout of SpotFormer's Table VII, a plot per
video of the predicted probabilities with ground-truth and predicted intervals (like its
Fig. 8), and training curves. Outputs made with the oracle selection protocol say so."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from fes_jax.eval.megc import Span
from fes_jax.eval.postprocess import CHANNELS

ORACLE_NOTE = ("**ORACLE PROTOCOL**: the epoch of every fold was chosen on the held-out "
               "subject's own test F1 (the papers' protocol). These numbers are not an honest "
               "estimate of performance on unseen subjects.")


def table_vii(scores: dict[str, dict[str, Any]], ground_truth: dict[str, int]) -> str:
  """Markdown: rows Total / TP / FP / FN / Precision / Recall / F1; columns MaE, ME, Overall."""
  cols = ("mae", "me", "overall")
  lines = ["| | MaE | ME | Overall |", "|---|---|---|---|",
           "| Total | " + " | ".join(str(ground_truth[c]) for c in cols) + " |"]
  for key, name in (("tp", "TP"), ("fp", "FP"), ("fn", "FN")):
    lines.append(f"| {name} | " + " | ".join(str(scores[c][key]) for c in cols) + " |")
  for key, name in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1-score")):
    lines.append(f"| {name} | " + " | ".join(f"{scores[c][key]:.4f}" for c in cols) + " |")
  return "\n".join(lines)


def markdown(*, title: str, scores: dict, ground_truth: dict[str, int], folds: Sequence[dict],
             selection: str, settings: dict[str, Any], plots: Sequence[str] = (),
             curves: str | None = None) -> str:
  oracle = selection == "oracle"
  out = [f"# {title}" + (" (ORACLE)" if oracle else ""), ""]
  if oracle:
    out += [ORACLE_NOTE, ""]
  out += [f"Model selection: `{selection}`"
          + ("" if oracle else " (the held-out subject is never looked at)") + ".", "",
          "## Spotting (MEGC, TP/FP/FN summed over all folds)", "",
          table_vii(scores, ground_truth), "", "## Per fold", "",
          "| fold | subject | MaE TP/FP/FN | ME TP/FP/FN | overall F1 |", "|---|---|---|---|---|"]
  for k, f in enumerate(folds):
    c = f["counts"]
    subject = f["subject"] + (f" (oracle epoch {f['oracle_epoch']})" if "oracle_epoch" in f
                              else "")
    out.append(f"| {k} | {subject} | {c['mae']['tp']}/{c['mae']['fp']}/{c['mae']['fn']} | "
               f"{c['me']['tp']}/{c['me']['fp']}/{c['me']['fn']} | "
               f"{f['scores']['overall']['f1']:.4f} |")
  return "\n".join(out + report_tail(settings, curves, plots)) + "\n"


def report_tail(settings: dict[str, Any], curves: str | None = None,
                plots: Sequence[str] = (), curves_alt: str = "training curves") -> list[str]:
  """A report's closing sections (markdown lines): settings, training curves, video plots."""
  out = ["", "## Settings", ""] + [f"- {k}: `{v}`" for k, v in settings.items()]
  if curves:
    out += ["", "## Training curves", "", f"![{curves_alt}]({curves})"]
  if plots:
    out += ["", "## Videos", ""] + [f"![{pathlib.Path(p).stem}]({p})" for p in plots]
  return out


TYPE_COLORS = {"mae": "tab:blue", "me": "tab:red"}


def plot_spans(path: str | pathlib.Path, frames_N: np.ndarray,
               curves: dict[str, Sequence[tuple[np.ndarray, str, str, float]]],
               gt: Sequence[Span], pred: Sequence[Span], title: str, note: str,
               xlabel: str = "frame", height: float = 5.0) -> None:
  """One panel per expression type ('mae' above 'me'): its curves (``curves[type]``: values
  over ``frames_N``, label, colour, line width), ground-truth intervals shaded, predicted
  ones as black bars above; ``note`` follows the title."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(2, 1, figsize=(12, height), sharex=True)
  for ax, kind in zip(axes, ("mae", "me")):
    for s in gt:
      if s.type == kind and s.offset is not None:
        ax.axvspan(s.onset, s.offset, color=TYPE_COLORS[kind], alpha=0.15, lw=0)
    for values_N, label, color, lw in curves[kind]:
      ax.plot(frames_N, values_N, color=color, lw=lw, label=label)
    for s in pred:
      if s.type == kind:
        ax.hlines(1.05, s.onset, s.offset, color="black", lw=4)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(kind.upper())
    ax.legend(loc="upper right", fontsize=7)
  axes[0].set_title(f"{title}: {note}")
  axes[1].set_xlabel(xlabel)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_video(path: str | pathlib.Path, probs_Nx10: np.ndarray, frames_N: np.ndarray,
               gt: Sequence[Span], pred: Sequence[Span], title: str,
               note: str = "shaded = ground truth, black bars = predicted intervals") -> None:
  """Apex and expression probabilities per type, ground truth shaded, predictions as bars;
  ``note`` follows the title."""
  curves = {kind: [(probs_Nx10[:, CHANNELS[kind]["apex"]], "apex", TYPE_COLORS[kind], 1.0),
                   (probs_Nx10[:, CHANNELS[kind]["expr"]], "expression", "gray", 0.8)]
            for kind in ("mae", "me")}
  plot_spans(path, frames_N, curves, gt, pred, title, note)


def plot_curves(path: str | pathlib.Path, histories: Sequence[tuple[str, Sequence[float]]],
                ylabel: str = "training loss") -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7, 4))
  for name, values in histories:
    ax.plot(np.arange(1, len(values) + 1), values, lw=1, label=name)
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  if len(histories) <= 12:
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
