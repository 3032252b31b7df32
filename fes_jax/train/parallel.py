"""Fold-parallel training: K LOSO folds trained by one jitted program (``train.fold_parallel``).

Each fold of a group keeps what a sequential fold (:func:`fes_jax.train.fold.run_fold`) has:
its training split (every subject but its held-out one), its input pipeline (the same seeded
per-epoch shuffle), its parameters, optimizer state and BatchNorm statistics, all initialised
from ``train.seed`` as every sequential fold is. The states are stacked along a leading fold
axis K and the train step is ``jax.vmap(step.train_step)`` over (state, batch): batches
(K, S, ...) are split along S over the mesh's ``'data'`` axis, the stacked state is
replicated. Each fold's batch carries its own ``valid`` mask (padded windows weigh 0) and the
NaN guard skips a fold's step on its own.

Steps per epoch: a fixed ``train.steps_per_epoch`` applies to every fold (and then a group
computes what its folds compute sequentially, up to round-off). In auto mode (0) sequential
folds each take ceil(expression segments / batch_segments) steps, which differ between
folds; a group takes the largest of its folds' counts for every fold (its input pipelines
repeat), so its folds see more steps per epoch than they would sequentially (and the lr
decays per that longer epoch).

Selection: 'last_epoch', and 'oracle' (trains as 'last_epoch', predicts every fold's held-out
subject after each epoch into ``fold_XXX/oracle/epoch_XXX.npz``, as sequential folds do);
'validation' raises (train such runs with ``fold_parallel=0``).

Outputs per fold are those of a sequential fold (``fold_XXX/metrics.json``, ``tensorboard/``,
``predictions.npz``, ``fold.json`` with ``fold_parallel`` and ``group`` added), so the
evaluate / aggregate / report stages read them unchanged. The group's stacked state is
checkpointed every epoch under ``<workdir>/folds/group_<first>_<last>/checkpoints`` (orbax;
a rerun resumes from the newest).
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Any, Callable, Iterator, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from fes_jax import input_pipeline
from fes_jax.context import Context, write_json_atomic
from fes_jax.losses import LossWeights
from fes_jax.train import data as data_lib
from fes_jax.train import fold as fold_lib
from fes_jax.train import loop, mesh as mesh_lib, state as state_lib, step as step_lib
from fes_jax.train.checkpoint import FoldCheckpoints
from fes_jax.train.metrics import MetricsWriter, read_json, to_python

SELECTIONS = ("last_epoch", "oracle")
_COMPILED: dict[Any, tuple[Any, Any, Any]] = {}  # the compiled steps of the last configuration


def fold_groups(folds: Sequence[int], size: int) -> list[list[int]]:
  """The folds in run order cut into groups of ``size`` (-1: one group; 0 or 1: one each)."""
  if size < -1:
    raise ValueError(f"train.fold_parallel must be -1, 0 or a group size >= 1, got {size}")
  folds = list(folds)
  if size == -1:
    return [folds] if folds else []
  size = max(size, 1)
  return [folds[i:i + size] for i in range(0, len(folds), size)]


def group_dir(workdir: pathlib.Path, group: Sequence[int]) -> pathlib.Path:
  return workdir / "folds" / f"group_{group[0]:03d}_{group[-1]:03d}"


def train_stage(ctx: Context) -> dict[str, Any]:
  """The train stage of fold k when ``train.fold_parallel`` groups folds.

  Trains the group of k (among the folds this run trains) unless its outputs exist, and keeps
  the other folds' records for their own stages, which follow in the same run. A group of one
  (``--fold=k``, or the last, short group) is an ordinary sequential fold.
  """
  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  k = fold_lib.fold_index(ctx.state["stage"])
  subjects = stages.fold_subjects(ctx)
  folds = list(ctx.state.get("folds") or range(len(subjects)))
  group = next((g for g in fold_groups(folds, ctx.config.train.fold_parallel) if k in g), [k])
  done = ctx.state.setdefault("fold_parallel_records", {})
  if k in done:  # trained with an earlier fold of its group in this run
    return done.pop(k)
  if len(group) == 1:
    return fold_lib.run_fold(ctx.config, fold_lib.open_records(ctx), subjects[k],
                             fold_lib.fold_dir(ctx.workdir, k), fold=k)
  recorded = _recorded(fold_lib.fold_dir(ctx.workdir, k))
  if recorded is not None:  # its group finished in an earlier run that stopped before k's marker
    return recorded
  records = run_folds_parallel(ctx.config, fold_lib.open_records(ctx),
                               [subjects[j] for j in group],
                               [fold_lib.fold_dir(ctx.workdir, j) for j in group], folds=group,
                               checkpoint_dir=group_dir(ctx.workdir, group) / "checkpoints")
  done.update(zip(group, records))
  return done.pop(k)


def _recorded(out_dir: pathlib.Path) -> dict[str, Any] | None:
  """A fold's record when a group run wrote all of its outputs (fold.json comes last)."""
  path = out_dir / "fold.json"
  if not (path.exists() and (out_dir / fold_lib.PREDICTIONS).exists()):
    return None
  record = read_json(path)
  return record if record.get("fold_parallel") else None


def stack(trees: Sequence[Any]) -> Any:
  """Pytrees of equal structure -> one pytree with a leading axis (len(trees),)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack_fn(mesh: Mesh) -> Callable[[Any, int], Any]:
  """``(stacked state, i) -> fold i's state``, replicated over ``mesh`` (one compile)."""
  take = jax.jit(lambda s, i: jax.tree.map(lambda x: x[i], s),
                 out_shardings=mesh_lib.replicated(mesh))
  return lambda s, i: take(s, jnp.asarray(i, jnp.int32))


def stacked_batches(hosts: Sequence[Callable[[int], Iterator[Any]]], mesh: Mesh
                    ) -> Callable[[int], Iterator[Any]]:
  """``epoch -> global batches (K, S, ...)``: the folds' host batches stacked, S sharded."""
  def batches(epoch: int) -> Iterator[Any]:
    iterators = [h(epoch) for h in hosts]
    while True:
      parts = [next(it) for it in iterators]
      host = {key: np.stack([p[key] for p in parts]) for key in parts[0]}
      yield input_pipeline.to_global_array(host, mesh, mesh_lib.folds_batch_sharding(mesh).spec)

  return batches


def run_folds_parallel(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                       held_outs: Sequence[str], out_dirs: Sequence[str | pathlib.Path], *,
                       folds: Sequence[int], mesh: Mesh | None = None,
                       checkpoint_dir: str | pathlib.Path | None = None,
                       on_epoch_end: Callable[[int, list[dict[str, Any]]], None] | None = None
                       ) -> list[dict[str, Any]]:
  """Trains the folds of one group together, writes each fold's outputs; returns their
  stage records (in the order of ``folds``).

  Args:
    config: the run config (sections ``model`` and ``train``).
    builder: the built segment records (one split per subject).
    held_outs: the test subject of each fold.
    out_dirs: each fold's ``<workdir>/folds/fold_XXX``.
    folds: the fold indices (recorded).
    mesh: default: a 'data' mesh over every device.
    checkpoint_dir: the group's checkpoints; default
      ``<parent of out_dirs[0]>/group_<first>_<last>/checkpoints``.
    on_epoch_end: called after an epoch is saved with (epoch, per-fold records).
  """
  start = time.time()
  tf.config.set_visible_devices([], "GPU")  # TF only reads records; keep it off accelerators
  t = config.train
  out_dirs = [pathlib.Path(d) for d in out_dirs]
  folds, held_outs = list(folds), list(held_outs)
  if not len(folds) == len(held_outs) == len(out_dirs) or not folds:
    raise ValueError(f"one held-out subject and out_dir per fold: {folds}, {held_outs}, "
                     f"{out_dirs}")
  n = len(folds)
  if t.selection not in SELECTIONS:
    raise ValueError(f"train.fold_parallel trains with train.selection in {SELECTIONS}, got "
                     f"{t.selection!r}; train 'validation' runs with train.fold_parallel=0")
  mesh, eval_segments, model_cfg, window = fold_lib.check_setup(config, builder, mesh)
  subjects = sorted(data_lib.subject_splits(builder))
  train_subjects, train_splits, auto_steps = [], [], []
  for k, held_out in zip(folds, held_outs):
    if held_out not in subjects:
      raise ValueError(f"held-out subject {held_out!r} has no records; known: {subjects}")
    train_subjects.append([s for s in subjects if s != held_out])
    train_splits.append(data_lib.join_splits(train_subjects[-1]))
    info = data_lib.split_info(builder, train_splits[-1])
    if info.expression_segments == 0:
      raise ValueError(f"fold {k}: no training segment with an expression")
    auto_steps.append(math.ceil(info.expression_segments / t.batch_segments))
  steps = t.steps_per_epoch or max(auto_steps)
  if not t.steps_per_epoch and len(set(auto_steps)) > 1:
    logging.info("folds %s: auto steps per epoch %s differ; the group takes %d for every fold "
                 "(set train.steps_per_epoch to match sequential folds)", folds, auto_steps,
                 steps)
  logging.info("folds %s (held out %s) in parallel: %d steps per epoch; %d devices", folds,
               held_outs, steps, mesh.devices.size)

  weights = LossWeights.from_mapping({**dict(t.loss), "macro_ratio": t.mae_weight})
  dtype = step_lib.COMPUTE_DTYPES[t.compute_dtype]
  graphdef, graphdef_eval, params, rest = state_lib.init_model(config.model.name, model_cfg,
                                                               t.seed)
  opt_cfg = state_lib.OptimizerConfig.from_mapping(t)
  tx, schedule = state_lib.make_optimizer(opt_cfg, steps, params)
  state = mesh_lib.replicate(stack([state_lib.init_state(params, rest, tx)] * n), mesh)
  batches = stacked_batches(
      [data_lib.host_train_batches(builder, split, batch_segments=t.batch_segments, seed=t.seed,
                                   num_nodes=model_cfg.num_nodes) for split in train_splits],
      mesh)
  compile_start = time.perf_counter()
  key = (config.model.name, model_cfg, opt_cfg, steps, weights, t.compute_dtype, mesh, n,
         t.batch_segments, eval_segments, window, int(builder.info.metadata["segment_length"]))
  if key not in _COMPILED:
    train_jit = step_lib.jit_folds_train_step(mesh, graphdef=graphdef, tx=tx,
                                              schedule=schedule, weights=weights,
                                              compute_dtype=dtype)
    abstract = data_lib.abstract_batch(builder, batch_segments=t.batch_segments,
                                       num_nodes=model_cfg.num_nodes, mesh=mesh, folds=n)
    _COMPILED.clear()
    _COMPILED[key] = (train_jit.lower(state, abstract).compile(),
                      step_lib.jit_eval_step(mesh, graphdef=graphdef_eval, weights=weights,
                                             compute_dtype=dtype),
                      _unstack_fn(mesh))
  train_step, eval_step, unstack = _COMPILED[key]
  compile_seconds = time.perf_counter() - compile_start

  test_splits = [data_lib.join_splits([h]) for h in held_outs]
  test_videos = [data_lib.split_info(builder, split).videos for split in test_splits]

  def predict_held_out(i: int, stacked: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    fold_state = unstack(stacked, i)
    return data_lib.predict_split(lambda b: eval_step(fold_state, b), builder, test_splits[i],
                                  test_videos[i], batch_segments=eval_segments,
                                  num_nodes=model_cfg.num_nodes, mesh=mesh)

  observe = None
  if t.selection == "oracle":
    def observe(epoch: int, stacked: Any) -> list[dict[str, float]]:
      out = []
      for i in range(n):
        preds, test_losses = predict_held_out(i, stacked)
        if mesh_lib.is_writer():
          data_lib.save_predictions(
              out_dirs[i] / fold_lib.ORACLE_DIR / f"epoch_{epoch:03d}.npz", preds,
              subject=held_outs[i], epoch=epoch, selection="oracle")
        out.append({"test_" + k: v for k, v in test_losses.items()})
      return out

  extras = [{"fold": k, "held_out": h, "selection": t.selection, "train_subjects": ts,
             "validation_subjects": [], "steps_per_epoch": steps,
             "batch_segments": t.batch_segments, "fold_parallel": n, "group": folds}
            for k, h, ts in zip(folds, held_outs, train_subjects)]
  checkpoint_dir = pathlib.Path(checkpoint_dir or
                                group_dir(out_dirs[0].parents[1], folds) / "checkpoints")
  writers = [MetricsWriter(d, enabled=mesh_lib.is_writer()) for d in out_dirs]
  checkpoints = FoldCheckpoints(checkpoint_dir, max_to_keep=t.checkpoint_keep,
                                async_save=t.checkpoint_async)
  try:
    state, histories, resumed_from, seconds, windows = fit_folds(
        state, train_step=train_step, train_batches=batches, epochs=t.epochs,
        steps_per_epoch=steps, max_bad_steps=t.max_bad_steps, folds=folds,
        held_outs=held_outs, checkpoints=checkpoints, writers=writers, extras=extras,
        observe=observe, on_epoch_end=on_epoch_end)
  finally:
    checkpoints.close()
    for w in writers:
      w.close()

  records = []
  n_params = state_lib.count_params_of(params)
  for i in range(n):
    preds, _ = predict_held_out(i, state)
    history = histories[i]
    if mesh_lib.is_writer():
      data_lib.save_predictions(out_dirs[i] / fold_lib.PREDICTIONS, preds,
                                subject=held_outs[i], epoch=len(history),
                                selection=t.selection)
    record = {
        **extras[i], "epochs": len(history), "selected_epoch": len(history),
        "resumed_from_epoch": resumed_from, "final_loss": history[-1]["train_loss"],
        "skipped_steps": int(sum(h["skipped_steps"] for h in history)),
        # The group's time (every fold of the group trained in it) and this fold's share.
        "train_seconds": round(seconds, 2),
        "samples_per_s": round(windows[i] / seconds, 2) if seconds > 0 else None,
        "compile_seconds": round(compile_seconds, 2), "params": n_params,
        "devices": int(mesh.devices.size), "processes": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind, "compute_dtype": t.compute_dtype,
        "test_windows": int(preds["probs"].shape[0]), "predictions": fold_lib.PREDICTIONS,
        "oracle_predictions": fold_lib.ORACLE_DIR if t.selection == "oracle" else None,
        "fold_seconds": round(time.time() - start, 2)}
    if mesh_lib.is_writer():
      write_json_atomic(out_dirs[i] / "fold.json", to_python(record))
    records.append(to_python(record))
  return records


def fit_folds(state: Any, *, train_step: Callable[[Any, Any], tuple[Any, Any]],
              train_batches: Callable[[int], Iterator[Any]], epochs: int, steps_per_epoch: int,
              max_bad_steps: int, folds: list[int], held_outs: list[str],
              checkpoints: FoldCheckpoints, writers: list[MetricsWriter],
              extras: list[dict[str, Any]],
              observe: Callable[[int, Any], list[dict[str, float]]] | None = None,
              on_epoch_end: Callable[[int, list[dict[str, Any]]], None] | None = None
              ) -> tuple[Any, list[list[dict[str, Any]]], int | None, float, list[int]]:
  """:func:`fes_jax.train.loop.fit` for a stacked state (selection: the last epoch).

  Returns:
    (final stacked state, per-fold epoch histories, the epoch resumed from or None, seconds
    in train steps in this run, per-fold valid windows trained on in this run).
  """
  n = len(folds)
  histories: list[list[dict[str, Any]]] = [[] for _ in range(n)]
  resumed_from = checkpoints.latest_epoch()
  if resumed_from is not None:
    state, meta, _ = checkpoints.restore(resumed_from, state)
    if list(meta["held_out"]) != held_outs:
      raise ValueError(f"{checkpoints.directory} holds folds of {meta['held_out']}, not "
                       f"{held_outs}")
    histories = [list(h) for h in meta["histories"]]
    logging.info("folds %s: resumed from epoch %d of %d (%s)", folds, resumed_from, epochs,
                 checkpoints.directory)
  seconds, windows = 0.0, [0] * n
  for epoch in range(len(histories[0]) + 1, epochs + 1):
    begin = time.perf_counter()
    step_metrics, batches = [], iter(train_batches(epoch))
    for _ in range(steps_per_epoch):
      state, metrics = train_step(state, next(batches))
      if step_metrics:  # NaN guard, one step behind so that dispatch stays asynchronous
        _check(step_metrics[-1], max_bad_steps, epoch, folds)
      step_metrics.append(metrics)
    _check(step_metrics[-1], max_bad_steps, epoch, folds)
    host = jax.device_get(step_metrics)
    elapsed = time.perf_counter() - begin
    seconds += elapsed
    seen = observe(epoch, state) if observe is not None else [{}] * n
    records = []
    for i in range(n):
      fold_metrics = [{k: v[i] for k, v in m.items()} for m in host]
      record = {"epoch": epoch,
                **loop._epoch_summary(fold_metrics)}  # pylint: disable=protected-access
      windows[i] += record["windows"]
      record.update(seconds=round(elapsed, 3), windows_per_s=record["windows"] / elapsed)
      record.update({f"oracle_{k}": float(v) for k, v in seen[i].items()})
      record["selected_epoch"] = epoch
      histories[i].append(to_python(record))
      records.append(record)
    checkpoints.save(epoch, state, {"epochs_done": epoch, "folds": folds, "held_out": held_outs,
                                    "histories": histories})
    for i, w in enumerate(writers):
      w.scalars(epoch, {k: v for k, v in records[i].items() if k != "epoch"})
      w.write_json({**extras[i], "epochs": histories[i], "selected_epoch": epoch})
    logging.info("epoch %d/%d: folds %s, losses %s, %.1f windows/s", epoch, epochs, folds,
                 ", ".join(f"{r['train_loss']:.4f}" for r in records),
                 sum(r["windows"] for r in records) / elapsed)
    if on_epoch_end is not None:
      on_epoch_end(epoch, records)
  checkpoints.wait()
  if not histories[0]:
    raise ValueError("no epoch trained: train.epochs must be >= 1")
  return state, histories, resumed_from, seconds, windows


def _check(metrics: dict[str, Any], max_bad_steps: int, epoch: int, folds: list[int]) -> None:
  bad = np.asarray(metrics["bad_steps"])
  if bad.max() >= max_bad_steps:
    fold = folds[int(bad.argmax())]
    raise loop.NonFiniteTraining(
        f"epoch {epoch}, fold {fold}: {int(bad.max())} consecutive steps with a non-finite "
        f"loss or gradient (limit train.max_bad_steps = {max_bad_steps}); the last good state "
        "is the group's latest checkpoint. Lower the learning rate or check the features for "
        "NaN/inf")
