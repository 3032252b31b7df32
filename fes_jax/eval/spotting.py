"""Fold predictions -> intervals -> MEGC counts; the evaluate and aggregate stages' work.

A fold's ``predictions.npz`` holds per-window model outputs of the held-out subject:
``probs`` (M, 10) float32 probabilities (fes_jax.eval.postprocess.CHANNELS), ``video`` (M,)
names and ``frame_numbers`` (M,) 1-based frames in the dataset's numbering (resampled for
SAMM-LV). Intervals are evaluated in that numbering (as SpotFormer evaluates SAMM-LV at 1/7
rate) and written to the MEGC CSV in the original video numbering.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from fes_jax.data.types import Dataset
from fes_jax.eval import megc, postprocess
from fes_jax.eval.megc import Span


def load_predictions(path: str | pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """``{video: {"probs": (N, 10), "frame_numbers": (N,)}}`` sorted by frame."""
  with np.load(path, allow_pickle=False) as f:
    probs, videos, frames = f["probs"], f["video"].astype(str), f["frame_numbers"]
  out = {}
  for v in sorted(set(videos)):
    sel = np.flatnonzero(videos == v)
    order = sel[np.argsort(frames[sel], kind="stable")]
    out[v] = {"probs": probs[order], "frame_numbers": frames[order]}
  return out


def spot(predictions: dict[str, dict[str, np.ndarray]],
         cfg: postprocess.PostprocessConfig) -> list[Span]:
  spans = []
  for video, p in predictions.items():
    spans += postprocess.spot_video(p["probs"], p["frame_numbers"], video, cfg)
  return spans


def ground_truth(dataset: Dataset, videos: set[str]) -> list[Span]:
  """The annotated intervals of ``videos`` in the dataset's numbering."""
  return [Span(v.name, iv.onset, iv.offset, iv.type.value)
          for v, iv in dataset.intervals() if v.name in videos]


def to_original(dataset: Dataset, spans: list[Span]) -> list[Span]:
  videos = {v.name: v for v in dataset.videos()}
  return [dataclasses.replace(s, onset=videos[s.video].to_original_frame(s.onset),
                              offset=videos[s.video].to_original_frame(s.offset))
          for s in spans]


def postprocess_config(cfg: Any) -> postprocess.PostprocessConfig:
  """From the config's ``eval`` section."""
  return postprocess.PostprocessConfig(
      apex_threshold=cfg.apex_threshold, me_search=tuple(cfg.me_search),
      mae_search=tuple(cfg.mae_search), require_order=cfg.require_order,
      nms_iou=cfg.nms_iou, top_k=cfg.top_k)


def conventions(cfg: Any) -> megc.MegcConventions:
  return megc.MegcConventions(iou_threshold=cfg.iou_threshold,
                              length="inclusive" if cfg.iou_inclusive else "exclusive",
                              threshold_op=cfg.threshold_op, matching=cfg.matching,
                              type_from=cfg.type_from)


def evaluate_fold(dataset: Dataset, subject: str, predictions_path: pathlib.Path,
                  eval_cfg: Any) -> tuple[dict[str, Any], list[Span]]:
  """Counts of one fold (its held-out subject's videos) and its spotted intervals."""
  preds = load_predictions(predictions_path)
  videos = set(dataset.subjects[subject].videos)
  unknown = sorted(set(preds) - videos)
  if unknown:
    raise ValueError(f"{predictions_path}: videos {unknown} are not subject {subject}'s")
  spans = spot(preds, postprocess_config(eval_cfg))
  c = megc.counts(ground_truth(dataset, videos), spans, conventions(eval_cfg))
  return {"subject": subject, "counts": c, "scores": megc.scores(c),
          "videos": sorted(videos), "videos_predicted": sorted(preds)}, spans
