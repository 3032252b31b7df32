"""The FESNet train stage: one fold from the clip records, on the shared trainer.

For fold k (stage ``train_fold<k>``, fold ``stages.fold_plan(ctx)[k]``):

1. training clips: every clip of the fold's training videos (``train.clips='all'``, default)
   or those with an expression frame; class weights = inverse class proportions of their
   labelled frames (``fesnet_losses.inverse_class_weights``), per fold;
2. ``fes_jax.train.loop.fit``: the jitted sharded step (``fesnet.step``), ``steps_per_epoch``
   batches of ``batch_clips`` clips per epoch (a fresh shuffle seeded by (seed, epoch)), NaN
   guard, an orbax checkpoint per epoch (``train.checkpoint.FoldCheckpoints``), automatic
   resume, metrics JSON + TensorBoard (``train.metrics.MetricsWriter``);
3. selection: the last epoch (never the held-out videos). ``train.selection='oracle'`` also
   predicts the held-out videos after every epoch into ``oracle/epoch_XXX.npz``; the
   evaluate stage keeps the epoch with the best held-out F1 and labels every output "oracle";
4. inference on the held-out videos (every clip, eval mode): per-frame class probabilities
   with the video, clip, position, resampled and original frame numbers and labels of every
   valid clip frame -> ``predictions.npz`` (the evaluate stage's input).

Layout, under ``<workdir>/folds/fold_XXX/``: ``checkpoints/<epoch>/`` (orbax),
``metrics.json``, ``tensorboard/events.out.tfevents.*``, ``predictions.npz``, ``fold.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from fes_jax import fesnet_losses, input_pipeline
from fes_jax.fesnet import data as data_lib, step as step_lib
from fes_jax.models.fesnet import FesnetConfig
from fes_jax.train import data as train_data, loop, mesh as mesh_lib, state as state_lib
from fes_jax.train import step as train_step_lib
from fes_jax.train.fold import ORACLE_DIR
from fes_jax.train.metrics import to_python

PREDICTIONS = "predictions.npz"
_COMPILED: dict[Any, tuple[Any, Any]] = {}  # the compiled steps of the last configuration


@dataclasses.dataclass(frozen=True)
class FoldSpec:
  """One fold: its index, name (held-out subject, or ``kfold5_<k>``) and videos."""

  index: int
  name: str
  train_videos: tuple[str, ...]
  test_videos: tuple[str, ...]


def fold_dir(workdir: pathlib.Path, k: int) -> pathlib.Path:
  return pathlib.Path(workdir) / "folds" / f"fold_{k:03d}"


def _optimizer_key(t: ml_collections.ConfigDict) -> str:
  keys = ("optimizer", "learning_rate", "betas", "adam_eps", "weight_decay",
          "lr_decay_per_epoch", "gamma", "lsdm_form", "ce_on", "compute_dtype", "batch_clips",
          "eval_batch_clips")
  return json.dumps({k: t.get(k) for k in keys}, sort_keys=True, default=str)


def check_records(model_cfg: FesnetConfig, builder: tfds.core.DatasetBuilder) -> None:
  """The records' clips have the model's frame count and image size."""
  length, size = builder.info.features["frames"].shape[:2]
  if (length, size) != (model_cfg.num_frames, model_cfg.image_size):
    raise ValueError(f"the records hold {length}-frame clips of {size} x {size} crops, the "
                     f"model expects {model_cfg.num_frames} frames of {model_cfg.image_size} x "
                     f"{model_cfg.image_size}; set model.num_frames / model.image_size like "
                     "preprocess.clip_length / preprocess.size")


def predict_videos(predict_fn: Callable[[Any], Any], builder: tfds.core.DatasetBuilder,
                   videos: Sequence[str], *, batch_clips: int, normalize: str,
                   mesh: Mesh) -> dict[str, np.ndarray]:
  """Per-frame probabilities of every valid frame of every clip of ``videos``.

  Returns ``probs`` (M, K) float32, ``video`` (M,) str, ``clip``, ``position`` (index in its
  clip), ``resampled_frames`` (1-based, the clip rate), ``frame_numbers`` (the original
  1-based frame each shows), ``labels`` (M,) int32.
  """
  out: dict[str, list] = {k: [] for k in ("probs", "video", "clip", "position",
                                          "resampled_frames", "frame_numbers", "labels")}
  for clips, meta in data_lib.eval_batches(builder, videos, batch_clips=batch_clips,
                                           normalize=normalize):
    x = input_pipeline.to_global_array(data_lib.local_rows({"clips": clips}), mesh)["clips"]
    n = len(meta["video"])
    probs = train_data.gather(predict_fn(x))[:n]  # (n, T, K)
    valid = meta["valid"].astype(bool)
    t = valid.shape[1]
    out["probs"].append(probs[valid])
    out["video"].append(np.repeat(meta["video"], t).reshape(n, t)[valid])
    out["clip"].append(np.repeat(meta["clip"], t).reshape(n, t)[valid])
    out["position"].append(np.tile(np.arange(t), (n, 1))[valid])
    for key in ("resampled_frames", "frame_numbers", "labels"):
      out[key].append(meta[key][valid])
  if not out["probs"]:
    raise ValueError(f"no clip of the videos {list(videos)[:5]} in the records")
  preds = {k: np.concatenate(v) for k, v in out.items()}
  preds["probs"] = preds["probs"].astype(np.float32)
  for key in ("clip", "position", "resampled_frames", "frame_numbers", "labels"):
    preds[key] = preds[key].astype(np.int32)
  return preds


def run_fold(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
             index: dict[str, np.ndarray], spec: FoldSpec, out_dir: str | pathlib.Path, *,
             mesh: Mesh | None = None,
             on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
  """Trains one fold and writes its held-out predictions; returns the stage record.

  Args:
    config: the run config (``model``, ``train`` sections).
    builder: the built clip records.
    index: ``data.scan_clips(builder)``.
    spec: the fold's videos.
    out_dir: ``<workdir>/folds/fold_XXX``.
    mesh: default: a ``'data'`` mesh over every device.
    on_epoch_end: passed to ``loop.fit`` (tests stop a run there).
  """
  start = time.time()
  tf.config.set_visible_devices([], "GPU")  # TF only reads records; keep it off accelerators
  t = config.train
  if t.selection not in ("last_epoch", "oracle"):
    raise ValueError(f"train.selection must be 'last_epoch' or 'oracle' for FESNet, got "
                     f"{t.selection!r} ('validation' is not implemented for this task)")
  if t.clips not in ("all", "expression"):
    raise ValueError(f"train.clips must be 'all' or 'expression', got {t.clips!r}")
  out_dir = pathlib.Path(out_dir)
  mesh = mesh_lib.make_mesh() if mesh is None else mesh
  eval_clips = t.eval_batch_clips or t.batch_clips
  mesh_lib.check_batch_divisible(t.batch_clips, mesh)
  mesh_lib.check_batch_divisible(eval_clips, mesh)
  model_cfg = FesnetConfig.from_mapping(config.model)
  check_records(model_cfg, builder)
  dtype = train_step_lib.COMPUTE_DTYPES[t.compute_dtype]

  expression_only = t.clips == "expression"
  keep = data_lib.select_clips(index, spec.train_videos, expression_only)
  num_clips = int(keep.sum())
  if num_clips == 0:
    raise ValueError(f"fold {spec.index} ({spec.name}): no training clip "
                     f"(train.clips={t.clips!r})")
  labels = index["labels"][keep]
  weights = np.asarray(fesnet_losses.inverse_class_weights(labels, model_cfg.num_classes))
  class_counts = np.bincount(labels[labels >= 0].ravel(), minlength=model_cfg.num_classes)
  steps = t.steps_per_epoch or math.ceil(num_clips / t.batch_clips)
  logging.info("fold %d (%s): %d training clips of %d videos, %d steps/epoch, class weights "
               "%s", spec.index, spec.name, num_clips, len(spec.train_videos), steps,
               np.round(weights, 4).tolist())

  graphdef, graphdef_eval, params, rest = step_lib.init_fesnet(model_cfg, t.seed)
  tx, schedule = step_lib.make_optimizer(t, steps, params)
  state = mesh_lib.replicate(state_lib.init_state(params, rest, tx), mesh)
  weights_dev = mesh_lib.replicate(np.asarray(weights, np.float32), mesh)
  compile_start = time.perf_counter()
  # Folds of one run share the compiled steps (same model, optimizer, steps per epoch, batch
  # and mesh): parameters, data and class weights are inputs, not constants.
  # Steps per epoch enter the program only through the lr decay (a constant lr: any steps).
  key = (model_cfg, _optimizer_key(t), steps if t.lr_decay_per_epoch != 1.0 else 0, mesh)
  if key not in _COMPILED:
    jitted = step_lib.jit_train_step(mesh, graphdef=graphdef, tx=tx, schedule=schedule,
                                     gamma=float(t.gamma), lsdm_form=t.lsdm_form,
                                     ce_on=t.ce_on, compute_dtype=dtype)
    abstract = step_lib.abstract_batch(t.batch_clips, model_cfg, mesh)
    _COMPILED.clear()  # keep one entry: a run's folds use one configuration
    _COMPILED[key] = (jitted.lower(state, abstract, weights_dev).compile(),
                      step_lib.jit_predict_step(mesh, graphdef=graphdef_eval,
                                                compute_dtype=dtype))
  compiled_train, predict = _COMPILED[key]
  compile_seconds = time.perf_counter() - compile_start

  def train_step(s, batch):
    return compiled_train(s, batch, weights_dev)

  batches = data_lib.train_batches(builder, spec.train_videos, batch_clips=t.batch_clips,
                                   seed=t.seed, mesh=mesh, expression_only=expression_only,
                                   normalize=t.normalize, shuffle_buffer=t.shuffle_buffer)

  def predict_held_out(s):
    return predict_videos(lambda x: predict(s.params, s.rest, x), builder, spec.test_videos,
                          batch_clips=eval_clips, normalize=t.normalize, mesh=mesh)

  info = {"fold": spec.index, "name": spec.name, "protocol": config.loso.protocol}
  observe = None
  if t.selection == "oracle":
    def observe(epoch, s):
      preds = predict_held_out(s)
      if mesh_lib.is_writer():
        train_data.save_predictions(out_dir / ORACLE_DIR / f"epoch_{epoch:03d}.npz", preds,
                                    epoch=epoch, selection="oracle", **info)
      return {"test_frame_accuracy": float(np.mean(
          np.argmax(preds["probs"], -1) == preds["labels"]))}

  extra = {**info, "selection": t.selection, "train_videos": list(spec.train_videos),
           "test_videos": list(spec.test_videos), "train_clips": num_clips,
           "class_weights": weights.tolist(), "train_class_frames": class_counts.tolist(),
           "steps_per_epoch": steps, "batch_clips": t.batch_clips}
  result = loop.fit_fold(out_dir, state, checkpoint_keep=t.checkpoint_keep,
                         checkpoint_async=t.checkpoint_async, train_step=train_step,
                         train_batches=batches,
                         cfg=loop.FitConfig(epochs=t.epochs, steps_per_epoch=steps,
                                            selection="last_epoch",
                                            max_bad_steps=t.max_bad_steps),
                         observe=observe, extra_json=extra, on_epoch_end=on_epoch_end)

  preds = predict_held_out(result.selected)
  if mesh_lib.is_writer():
    train_data.save_predictions(out_dir / PREDICTIONS, preds, epoch=result.selected_epoch,
                                selection=t.selection, **info)
  record = {
      **extra, **loop.result_record(result, "clips_per_s"),
      "compile_seconds": round(compile_seconds, 2),
      **loop.run_record(mesh, t.compute_dtype, params),
      "test_frames": int(preds["probs"].shape[0]), "predictions": PREDICTIONS,
      "oracle_predictions": ORACLE_DIR if t.selection == "oracle" else None,
      "fold_seconds": round(time.time() - start, 2)}
  if mesh_lib.is_writer():
    from fes_jax.context import write_json_atomic  # pylint: disable=import-outside-toplevel

    write_json_atomic(out_dir / "fold.json", to_python(record))
  return to_python(record)
