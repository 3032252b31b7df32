"""The train stage: one LOSO fold from the segment TFRecords.

For fold k (stage ``train_fold<k>``, held-out subject ``stages.fold_subjects(ctx)[k]``):

1. training split: every subject but the held-out one (minus the validation subjects when
   ``train.selection == 'validation'``); segments with an expression only (the reference);
   each epoch a fresh shuffle seeded by (seed, epoch), ``steps_per_epoch`` batches of
   ``batch_segments`` segments (windows flattened; padded windows weigh 0);
2. :func:`fes_jax.train.loop.fit`: AdamW, per-epoch lr decay, NaN guard, an orbax
   checkpoint per epoch, automatic resume, metrics (TensorBoard + JSON);
3. model selection without the held-out subject: the last epoch, or the best validation
   loss (validation subjects drawn from the training subjects). Only the explicitly named
   ``train.selection='oracle'`` (the papers' protocol) looks at the held-out subject: it
   trains as 'last_epoch' and also predicts the held-out subject after every epoch into
   ``oracle/epoch_XXX.npz``; the evaluate stage picks the epoch with the best test F1 and
   every output made that way says "oracle";
4. inference on the held-out subject (every segment, eval mode): per-window probabilities
   with video and frame numbers -> ``predictions.npz`` (the evaluate stage's input).

Layout, under ``<workdir>/folds/fold_XXX/``: ``checkpoints/<epoch>/`` (orbax),
``metrics.json``, ``tensorboard/events.out.tfevents.*``, ``predictions.npz``, ``fold.json``.
"""

from __future__ import annotations

import math
import pathlib
import re
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from fes_jax.context import Context, write_json_atomic
from fes_jax.losses import LossWeights
from fes_jax.models import ModelConfig
from fes_jax.train import data as data_lib
from fes_jax.train import loop, mesh as mesh_lib, state as state_lib, step as step_lib
from fes_jax.train.metrics import to_python

PREDICTIONS = "predictions.npz"
# The papers' protocol: every epoch's predictions of the held-out subject, kept here; the
# evaluate stage picks the epoch with the best test F1 and labels every output "oracle".
ORACLE_DIR = "oracle"
SELECTIONS = loop.SELECTIONS + ("oracle",)
_COMPILED: dict[Any, tuple[Any, Any]] = {}  # the compiled steps of the last configuration


def fold_index(stage_name: str) -> int:
  """``'train_fold003'`` -> 3."""
  match = re.fullmatch(r"train_fold(\d+)", stage_name)
  if match is None:
    raise ValueError(f"not a train fold stage: {stage_name!r}")
  return int(match.group(1))


def fold_dir(workdir: pathlib.Path, k: int) -> pathlib.Path:
  return workdir / "folds" / f"fold_{k:03d}"


def open_records(ctx: Context) -> tfds.core.DatasetBuilder:
  """The preprocess stage's records: the same builder (a no-op build when complete)."""
  from fes_jax import stages  # pylint: disable=import-outside-toplevel
  from fes_jax.data import tfrecords  # pylint: disable=import-outside-toplevel
  from fes_jax.preprocess import extract  # pylint: disable=import-outside-toplevel

  mode, _ = stages.landmark_settings(ctx)
  return tfrecords.build(stages.load_dataset(ctx), ctx.path("features"), ctx.path("tfrecords"),
                         segment_length=ctx.config.preprocess.segment_length,
                         tag=extract.settings_hash(stages.sw_mro_config(ctx), mode))


def train_stage(ctx: Context) -> dict[str, Any]:
  """The stage entry (``stages.STAGES``): trains and predicts fold ``ctx.state['stage']``."""
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  mesh_lib.maybe_initialize_distributed(ctx.config.train.distributed)
  if ctx.config.train.get("fold_parallel", 0) not in (0, 1):  # groups of folds in one program
    from fes_jax.train import parallel  # pylint: disable=import-outside-toplevel

    return parallel.train_stage(ctx)
  k = fold_index(ctx.state["stage"])
  held_out = stages.fold_subjects(ctx)[k]
  builder = open_records(ctx)
  return run_fold(ctx.config, builder, held_out, fold_dir(ctx.workdir, k), fold=k)


def _validation_subjects(subjects: list[str], count: int, seed: int) -> list[str]:
  if count < 1 or count >= len(subjects):
    raise ValueError(f"train.validation_subjects must be in 1..{len(subjects) - 1} "
                     f"({len(subjects)} training subjects), got {count}")
  rng = np.random.default_rng(seed)
  return sorted(rng.choice(sorted(subjects), size=count, replace=False).tolist())


def check_setup(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                mesh: Mesh | None) -> tuple[Mesh, int, ModelConfig, int]:
  """What every trainer checks first: (mesh (default: every device), eval batch in segments,
  model config, the records' window), with batches divisible over the mesh and the window
  matching ``model.seq_len``."""
  t = config.train
  mesh = mesh_lib.make_mesh() if mesh is None else mesh
  mesh_lib.check_batch_divisible(t.batch_segments, mesh)
  eval_segments = t.eval_batch_segments or t.batch_segments
  mesh_lib.check_batch_divisible(eval_segments, mesh)
  model_cfg = ModelConfig.from_mapping(config.model)
  window = int(builder.info.metadata["window"])
  if window != model_cfg.seq_len:
    raise ValueError(f"the records hold {window}-frame windows but model.seq_len is "
                     f"{model_cfg.seq_len}; set preprocess.window and model.seq_len alike")
  return mesh, eval_segments, model_cfg, window


def run_fold(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
             held_out: str, out_dir: str | pathlib.Path, *, fold: int = 0,
             mesh: Mesh | None = None,
             on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
  """Trains one fold, writes its predictions; returns the stage record.

  Args:
    config: the run config (sections ``model`` and ``train``).
    builder: the built segment records (one split per subject).
    held_out: the test subject of this fold.
    out_dir: ``<workdir>/folds/fold_XXX``.
    fold: the fold index (recorded).
    mesh: default: a 'data' mesh over every device.
    on_epoch_end: passed to :func:`loop.fit` (tests stop a run there).
  """
  start = time.time()
  tf.config.set_visible_devices([], "GPU")  # TF only reads records; keep it off accelerators
  t = config.train
  out_dir = pathlib.Path(out_dir)
  mesh, eval_segments, model_cfg, window = check_setup(config, builder, mesh)
  if t.selection not in SELECTIONS:
    raise ValueError(f"train.selection must be one of {SELECTIONS}, got {t.selection!r}")
  subjects = sorted(data_lib.subject_splits(builder))
  if held_out not in subjects:
    raise ValueError(f"held-out subject {held_out!r} has no records; known: {subjects}")
  train_subjects = [s for s in subjects if s != held_out]
  val_subjects = (_validation_subjects(train_subjects, t.validation_subjects, t.seed)
                  if t.selection == "validation" else [])
  train_subjects = [s for s in train_subjects if s not in val_subjects]
  train_split = data_lib.join_splits(train_subjects)
  info = data_lib.split_info(builder, train_split)
  if info.expression_segments == 0:
    raise ValueError(f"fold {fold}: no training segment with an expression")
  steps = t.steps_per_epoch or math.ceil(info.expression_segments / t.batch_segments)
  logging.info("fold %d: held out %s; %d training subjects (%d expression segments, %d steps "
               "per epoch), validation subjects %s; %d devices", fold, held_out,
               len(train_subjects), info.expression_segments, steps, val_subjects or "none",
               mesh.devices.size)

  weights = LossWeights.from_mapping({**dict(t.loss), "macro_ratio": t.mae_weight})
  dtype = step_lib.COMPUTE_DTYPES[t.compute_dtype]
  graphdef, graphdef_eval, params, rest = state_lib.init_model(config.model.name, model_cfg,
                                                               t.seed)
  opt_cfg = state_lib.OptimizerConfig.from_mapping(t)
  tx, schedule = state_lib.make_optimizer(opt_cfg, steps, params)
  state = mesh_lib.replicate(state_lib.init_state(params, rest, tx), mesh)
  batches = data_lib.train_batches(builder, train_split, batch_segments=t.batch_segments,
                                   seed=t.seed, num_nodes=model_cfg.num_nodes, mesh=mesh)
  compile_start = time.perf_counter()
  # Folds of one run whose programs are identical (same model, optimizer, steps per epoch,
  # batch and mesh) share the compiled steps: parameters and data are inputs, not constants.
  key = (config.model.name, model_cfg, opt_cfg, steps, weights, t.compute_dtype, mesh,
         t.batch_segments, eval_segments, window, int(builder.info.metadata["segment_length"]))
  if key not in _COMPILED:
    train_jit = step_lib.jit_train_step(mesh, graphdef=graphdef, tx=tx, schedule=schedule,
                                        weights=weights, compute_dtype=dtype)
    abstract = data_lib.abstract_batch(builder, batch_segments=t.batch_segments,
                                       num_nodes=model_cfg.num_nodes, mesh=mesh)
    _COMPILED.clear()  # keep one entry: a run's folds use one configuration
    _COMPILED[key] = (train_jit.lower(state, abstract).compile(),
                      step_lib.jit_eval_step(mesh, graphdef=graphdef_eval, weights=weights,
                                             compute_dtype=dtype))
  train_step, eval_step = _COMPILED[key]
  compile_seconds = time.perf_counter() - compile_start

  validate = None
  if val_subjects:
    val_split = data_lib.join_splits(val_subjects)
    val_videos = data_lib.split_info(builder, val_split).videos

    def validate(s):
      return data_lib.predict_split(lambda b: eval_step(s, b), builder, val_split, val_videos,
                                    batch_segments=eval_segments,
                                    num_nodes=model_cfg.num_nodes, mesh=mesh)[1]

  test_split = data_lib.join_splits([held_out])
  test_videos = data_lib.split_info(builder, test_split).videos

  def predict_held_out(s):
    return data_lib.predict_split(lambda b: eval_step(s, b), builder, test_split, test_videos,
                                  batch_segments=eval_segments, num_nodes=model_cfg.num_nodes,
                                  mesh=mesh)

  observe = None
  if t.selection == "oracle":
    def observe(epoch, s):
      preds, test_losses = predict_held_out(s)
      if mesh_lib.is_writer():
        data_lib.save_predictions(out_dir / ORACLE_DIR / f"epoch_{epoch:03d}.npz", preds,
                                  subject=held_out, epoch=epoch, selection="oracle")
      return {"test_" + k: v for k, v in test_losses.items()}

  extra = {"fold": fold, "held_out": held_out, "selection": t.selection,
           "train_subjects": train_subjects, "validation_subjects": val_subjects,
           "steps_per_epoch": steps, "batch_segments": t.batch_segments}
  result = loop.fit_fold(out_dir, state, checkpoint_keep=t.checkpoint_keep,
                         checkpoint_async=t.checkpoint_async, train_step=train_step,
                         train_batches=batches,
                         cfg=loop.FitConfig(epochs=t.epochs, steps_per_epoch=steps,
                                            selection="last_epoch" if t.selection == "oracle"
                                            else t.selection, max_bad_steps=t.max_bad_steps),
                         validate=validate, observe=observe, extra_json=extra,
                         on_epoch_end=on_epoch_end)

  preds, _ = predict_held_out(result.selected)
  if mesh_lib.is_writer():
    data_lib.save_predictions(out_dir / PREDICTIONS, preds, subject=held_out,
                              epoch=result.selected_epoch, selection=t.selection)
  record = {
      **extra, **loop.result_record(result, "samples_per_s"),
      "compile_seconds": round(compile_seconds, 2),
      **loop.run_record(mesh, t.compute_dtype, params),
      "test_windows": int(preds["probs"].shape[0]), "predictions": PREDICTIONS,
      "oracle_predictions": ORACLE_DIR if t.selection == "oracle" else None,
      "fold_seconds": round(time.time() - start, 2)}
  if mesh_lib.is_writer():
    write_json_atomic(out_dir / "fold.json", to_python(record))
  return to_python(record)
