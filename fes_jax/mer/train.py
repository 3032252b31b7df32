"""One MOL LOSO fold with the shared trainer (``fes_jax.train``).

For fold k (stage ``train_fold<k>``, held-out subject ``fold_subjects(ctx)[k]``):

1. training data: the records of every other subject, labelled clips only (``data.label``),
   random ``crop_size`` crops and flips (``data.flip_prob``), reshuffled each epoch with a
   seed of (``train.seed``, epoch) only, so a resumed run sees the batches it would have;
   ``steps_per_epoch`` = ceil(training samples / batch) full batches (``train.steps_per_epoch``
   overrides), ``epochs`` = ``train.epochs`` or ceil(``train.num_steps`` / steps_per_epoch);
2. the step: ``fes_jax.train.step.apply_step`` (the shared model-agnostic core: NaN guard,
   donated state, BatchNorm statistics and dropout RNG state carried) with the MOL loss
   (``fes_jax.mol_losses.mol_loss``, weights from the ``loss`` section), jitted with
   ``NamedSharding``: state replicated, batch split over the mesh's ``'data'`` axis;
   optimiser Adam (paper; optional L2 weight decay as ``torch.optim.Adam``) or AdamW (code:
   decoupled decay on every parameter, as its single PyTorch parameter group), constant lr;
3. ``fes_jax.train.loop.fit``: an orbax checkpoint per epoch (the whole train state), resume
   from the latest, metrics to TensorBoard and ``metrics.json``; selection is the last epoch
   only (``train.selection`` must be 'last_epoch': nothing is chosen on the held-out subject);
4. prediction of the held-out subject (eval mode, centre crops, every labelled sample, batches
   padded with zero-weight rows): per clip the mean of its samples' softmax probabilities
   (one sample per clip with the default ``linspace`` sampling), ``predictions.json``.

Layout under ``<workdir>/folds/fold_XXX/``: ``checkpoints/<epoch>/``, ``metrics.json``,
``tensorboard/``, ``predictions.json``, ``fold.json``.
"""

from __future__ import annotations

import functools
import math
import pathlib
import re
import time
from typing import Any, Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from fes_jax import mol_losses
from fes_jax.context import Context, write_json_atomic
from fes_jax.mer import metrics as mer_metrics
from fes_jax.models.mol import Mol, MolConfig
from fes_jax.train import loop, mesh as mesh_lib, state as state_lib, step as step_lib
from fes_jax.train.metrics import to_python

PREDICTIONS = "predictions.json"
OPTIMIZERS = ("adam", "adamw")
STEP_KEYS = ("video", "flow", "landmarks", "label", "weight")
_COMPILED: dict[Any, tuple[Any, Any]] = {}  # the compiled steps of the last configuration


def fold_index(stage_name: str) -> int:
  match = re.fullmatch(r"train_fold(\d+)", stage_name)
  if match is None:
    raise ValueError(f"not a train fold stage: {stage_name!r}")
  return int(match.group(1))


def fold_dir(workdir: pathlib.Path, k: int) -> pathlib.Path:
  return pathlib.Path(workdir) / "folds" / f"fold_{k:03d}"


def train_stage(ctx: Context) -> dict[str, Any]:
  """The stage entry: trains fold ``ctx.state['stage']`` and predicts its held-out subject."""
  from fes_jax.mer import data as data_lib  # pylint: disable=import-outside-toplevel

  mesh_lib.maybe_initialize_distributed(ctx.config.train.distributed)
  k = fold_index(ctx.state["stage"])
  held_out = data_lib.fold_subjects(ctx)[k]
  return run_fold(ctx.config, data_lib.open_records(ctx), held_out, fold_dir(ctx.workdir, k),
                  fold=k)


# ----------------------------------------------------------------------------------------------
# Model, optimiser, steps


def model_config(config: ml_collections.ConfigDict) -> MolConfig:
  return MolConfig.from_mapping(config.model)


def loss_weights(config: ml_collections.ConfigDict) -> mol_losses.MolLossWeights:
  return mol_losses.MolLossWeights(**{k: v for k, v in config.loss.items() if k != "preset"})


# CPU compile options for small graphs (``train.fast_compile``): LLVM's expensive passes cost
# more compile time than they save at the tiny size (as tests/test_mol.py does); the one-off
# initialisation (random bits, run once) also skips XLA's backend optimisations. Measured on
# the shared 2-core CPU at the tiny size: train step compile 34 s / 0.13 s a step (the
# default compile: about 70 s), init compile 14 s (default: 70 s).
FAST_COMPILE = {"xla_llvm_disable_expensive_passes": True}
FAST_INIT = {"xla_llvm_disable_expensive_passes": True, "xla_backend_optimization_level": 0}
_INIT: dict[Any, tuple[Any, ...]] = {}  # the initial model of the last (config, seed)


def _compiler_options(config: ml_collections.ConfigDict, init: bool = False
                      ) -> dict[str, Any] | None:
  if not config.train.get("fast_compile", False):
    return None
  return dict(FAST_INIT if init else FAST_COMPILE)


def init_model(cfg: MolConfig, seed: int, compiler_options: dict[str, Any] | None = None
               ) -> tuple[nnx.GraphDef, nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef train, graphdef eval, params, rest) from ``seed`` (one jitted init; dropout
  from ``key(seed + 1)``), as ``fes_jax.train.state.init_model`` for the spotting models.

  Every fold of a run starts from the same initial model (same seed): it is built once per
  process and each call returns fresh copies (the train step donates its state).
  """
  key = (cfg, seed)
  if key not in _INIT:
    _INIT.clear()
    _INIT[key] = _init_model(cfg, seed, compiler_options)
  graphdef, graphdef_eval, params, rest = _INIT[key]
  return graphdef, graphdef_eval, *jax.tree.map(jnp.copy, (params, rest))


def _init_model(cfg: MolConfig, seed: int, compiler_options: dict[str, Any] | None):
  def create(seed_):
    return Mol(cfg, rngs=nnx.Rngs(params=jax.random.key(seed_),
                                  dropout=jax.random.key(seed_ + 1)))

  abstract = nnx.eval_shape(lambda: create(seed))
  abstract.eval()
  graphdef_eval, _, _ = nnx.split(abstract, nnx.Param, ...)
  abstract.train()
  graphdef_train, _, _ = nnx.split(abstract, nnx.Param, ...)

  @functools.partial(jax.jit, compiler_options=compiler_options)
  def init(seed_):
    model = create(seed_)
    model.train()
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return params, rest

  params, rest = init(jnp.asarray(seed, jnp.int32))
  return graphdef_train, graphdef_eval, params, rest


def make_optimizer(t: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam (+ L2 decay added to the gradient, ``torch.optim.Adam``'s) or AdamW (decoupled,
  every parameter); constant learning rate."""
  if t.optimizer not in OPTIMIZERS:
    raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {t.optimizer!r}")
  schedule = optax.constant_schedule(t.learning_rate)
  b1, b2 = (float(b) for b in t.betas)
  if t.optimizer == "adamw":
    return optax.adamw(schedule, b1=b1, b2=b2, eps=t.adam_eps,
                       weight_decay=t.weight_decay), schedule
  adam = optax.adam(schedule, b1=b1, b2=b2, eps=t.adam_eps)
  if t.weight_decay:
    adam = optax.chain(optax.add_decayed_weights(t.weight_decay), adam)
  return adam, schedule


def _outputs(model: nnx.Module, video: jax.Array, dtype: Any):
  out = model(video.astype(dtype))
  return jax.tree.map(lambda x: x.astype(jnp.float32), out)


def train_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, weights: mol_losses.MolLossWeights,
               compute_dtype: Any = jnp.float32):
  """One optimiser step of MOL (``step.apply_step``); ``weight`` (B,) masks padded rows."""

  def loss_fn(model, b, dtype):
    out = _outputs(model, b["video"], dtype)
    targets = mol_losses.MolTargets(b["label"], b["flow"], b["landmarks"])
    total, terms = mol_losses.mol_loss(out, targets, weights, b["weight"])
    correct = jnp.sum(b["weight"] * (jnp.argmax(out.logits, -1) == b["label"]))
    return total, {**terms, "acc": correct / jnp.maximum(jnp.sum(b["weight"]), 1.0)}

  new_state, metrics = step_lib.apply_step(state, loss_fn, batch, graphdef=graphdef, tx=tx,
                                           schedule=schedule, compute_dtype=compute_dtype)
  return new_state, {**metrics, "windows": jnp.sum(batch["weight"])}


def eval_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *,
              graphdef: nnx.GraphDef, compute_dtype: Any = jnp.float32) -> jax.Array:
  """Eval-mode class probabilities (B, K)."""
  model = nnx.merge(graphdef, step_lib.cast_floats(state.params, compute_dtype), state.rest,
                    copy=True)
  return jax.nn.softmax(_outputs(model, batch["video"], compute_dtype).logits, axis=-1)


def abstract_batch(batch: int, cfg: MolConfig, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  t, s = cfg.num_frames, cfg.image_size
  sharding = mesh_lib.batch_sharding(mesh)
  shapes = {"video": ((batch, t, s, s, cfg.in_channels), np.float32),
            "flow": ((batch, t - 1, s, s, 2), np.float32),
            "landmarks": ((batch, t, 2 * cfg.num_landmarks), np.float32),
            "label": ((batch,), np.int32), "weight": ((batch,), np.float32)}
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for k, (shape, dtype) in shapes.items()}


def compiled_steps(config: ml_collections.ConfigDict, mesh: Mesh, graphdef: nnx.GraphDef,
                   graphdef_eval: nnx.GraphDef, state: state_lib.TrainState, tx, schedule,
                   batch: int, eval_batch: int) -> tuple[Callable, Callable]:
  """The jitted train step (compiled ahead of time) and eval step; folds of one run share
  them (parameters and data are inputs, not constants)."""
  cfg = model_config(config)
  t = config.train
  weights = loss_weights(config)
  key = (cfg, weights, t.optimizer, float(t.learning_rate), tuple(t.betas), t.adam_eps,
         t.weight_decay, t.compute_dtype, mesh, batch, eval_batch,
         bool(t.get("fast_compile", False)))
  if key not in _COMPILED:
    dtype = step_lib.COMPUTE_DTYPES[t.compute_dtype]
    repl, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    options = _compiler_options(config)
    train_jit = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx,
                                          schedule=schedule, weights=weights,
                                          compute_dtype=dtype),
                        donate_argnums=0, in_shardings=(repl, data),
                        out_shardings=(repl, repl))
    eval_jit = jax.jit(functools.partial(eval_step, graphdef=graphdef_eval,
                                         compute_dtype=dtype),
                       in_shardings=(repl, data), out_shardings=data)
    _COMPILED.clear()
    _COMPILED[key] = (
        train_jit.lower(state, abstract_batch(batch, cfg, mesh)).compile(options),
        eval_jit.lower(state, abstract_batch(eval_batch, cfg, mesh)).compile(options))
  return _COMPILED[key]


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
  n = int(config.train.mesh_devices)
  return mesh_lib.make_mesh(jax.devices()[:n] if n > 0 else None)


# ----------------------------------------------------------------------------------------------
# Data


def _dataset_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = config.data
  return dict(label=d.label, crop_size=d.crop_size, frame_norm=d.frame_norm,
              flow_norm=d.flow_norm)


def count_examples(builder, split: str, label: str) -> int:
  """Labelled samples of a split (the label feature only)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  key = f"label{label}"
  ds = builder.as_dataset(split=split, decoders={"video": tfds.decode.SkipDecoding(),
                                                 "flow": tfds.decode.SkipDecoding()})
  return int(sum(1 for ex in tfds.as_numpy(ds.map(lambda e: e[key])) if ex >= 0))


def _local_rows(x: np.ndarray) -> np.ndarray:
  """This process's share of a global batch (every process reads the same global batch)."""
  n, p = jax.process_count(), jax.process_index()
  return x if n == 1 else np.array_split(x, n)[p]


def _to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  from fes_jax import input_pipeline  # pylint: disable=import-outside-toplevel

  return input_pipeline.to_global_array({k: _local_rows(batch[k]) for k in STEP_KEYS}, mesh)


def train_batches(config: ml_collections.ConfigDict, builder, split: str, stats_split: str,
                  *, batch: int, steps: int, mesh: Mesh) -> Callable[[int], Any]:
  """``epoch -> global batches``: a fresh input pipeline seeded by (seed, epoch)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from fes_jax.data import mer_records  # pylint: disable=import-outside-toplevel
  from fes_jax.train.data import epoch_seed  # pylint: disable=import-outside-toplevel

  d = config.data

  def batches(epoch: int):
    ds = mer_records.make_mer_dataset(
        builder, split, batch_size=batch, training=True, seed=epoch_seed(config.train.seed,
                                                                         epoch),
        flip_prob=d.flip_prob, stats_split=stats_split, shuffle_buffer=d.shuffle_buffer,
        **_dataset_kwargs(config))
    for b in tfds.as_numpy(ds.take(steps)):
      b = dict(b, weight=np.ones(len(b["label"]), np.float32))
      yield _to_global(b, mesh)

  return batches


def predict_split(eval_fn: Callable, config: ml_collections.ConfigDict, builder, split: str,
                  stats_split: str, *, batch: int, mesh: Mesh, class_names) -> list[dict]:
  """Per-clip predictions of a split (mean of its samples' probabilities)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from fes_jax.data import mer_records  # pylint: disable=import-outside-toplevel
  from fes_jax.train.data import gather  # pylint: disable=import-outside-toplevel

  ds = mer_records.make_mer_dataset(builder, split, batch_size=batch, training=False,
                                    stats_split=stats_split, **_dataset_kwargs(config))
  clips: dict[tuple[str, str, str], dict[str, Any]] = {}
  for b in tfds.as_numpy(ds):
    n = len(b["label"])
    padded = {}
    for key in ("video", "flow", "landmarks", "label"):
      x = b[key]
      padded[key] = np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], x.dtype)])
    padded["weight"] = (np.arange(batch) < n).astype(np.float32)
    probs = gather(eval_fn(_to_global(padded, mesh)))[:n]
    for i in range(n):
      key = tuple(b[k][i].decode() for k in ("dataset", "subject", "clip"))
      entry = clips.setdefault(key, {"dataset": key[0], "subject": key[1], "clip": key[2],
                                     "emotion": b["emotion"][i].decode(),
                                     "label": int(b["label"][i]), "samples": []})
      entry["samples"].append(probs[i].astype(np.float64))
  out = []
  for entry in clips.values():
    samples = entry.pop("samples")
    mean = np.mean(samples, axis=0)
    pred = int(np.argmax(mean))
    out.append({**entry, "num_samples": len(samples), "pred": pred, "probs": mean.tolist(),
                "label_name": class_names[entry["label"]], "pred_name": class_names[pred]})
  return out


# ----------------------------------------------------------------------------------------------
# The fold


def run_fold(config: ml_collections.ConfigDict, builder, held_out: str,
             out_dir: str | pathlib.Path, *, fold: int = 0, mesh: Mesh | None = None,
             on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
  """Trains one fold, writes its held-out predictions; returns the stage record.

  Args:
    config: the run config (``model``, ``loss``, ``data``, ``train``).
    builder: the built MER records (one split per subject).
    held_out: the record subject of this fold.
    out_dir: ``<workdir>/folds/fold_XXX``.
    fold: the fold index (recorded).
    mesh: default: ``train.mesh_devices`` devices.
    on_epoch_end: passed to ``loop.fit`` (tests stop a run there).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from fes_jax.data import mer_records  # pylint: disable=import-outside-toplevel
  from fes_jax.mer.config import class_names  # pylint: disable=import-outside-toplevel

  start = time.time()
  tf.config.set_visible_devices([], "GPU")  # TF only reads records
  t = config.train
  out_dir = pathlib.Path(out_dir)
  if t.selection != "last_epoch":
    raise ValueError(f"train.selection must be 'last_epoch' for MER (no model selection on "
                     f"the held-out subject), got {t.selection!r}")
  mesh = make_mesh(config) if mesh is None else mesh
  batch = int(t.batch_size)
  eval_batch = int(t.eval_batch_size or batch)
  for b in (batch, eval_batch):
    mesh_lib.check_batch_divisible(b, mesh)
  cfg = model_config(config)
  names = class_names(config)
  if cfg.num_classes != len(names):
    raise ValueError(f"model.num_classes is {cfg.num_classes} but label scheme "
                     f"{config.data.label!r} has {len(names)} classes {names}")
  if cfg.image_size != config.data.crop_size:
    raise ValueError(f"model.image_size {cfg.image_size} != data.crop_size "
                     f"{config.data.crop_size}")
  if cfg.num_frames != builder.info.metadata["prep"]["num_frames"]:
    raise ValueError("model.num_frames differs from the records' preprocess.num_frames")
  subjects = sorted(builder.info.metadata["subject_splits"])
  if held_out not in subjects:
    raise ValueError(f"held-out subject {held_out!r} has no records; known: {subjects}")
  train_subjects = [s for s in subjects if s != held_out]
  train_split = mer_records.train_split(subjects, held_out)
  test_split = mer_records.test_split(held_out)
  n_train = count_examples(builder, train_split, config.data.label)
  if n_train < batch:
    raise ValueError(f"fold {fold}: {n_train} training samples, fewer than one batch of "
                     f"{batch}; lower train.batch_size")
  steps = int(t.steps_per_epoch or math.ceil(n_train / batch))
  epochs = int(t.epochs or math.ceil(t.num_steps / steps))
  logging.info("fold %d: held out %s; %d training samples of %d subjects; %d epochs x %d "
               "steps of %d; %d devices", fold, held_out, n_train, len(train_subjects),
               epochs, steps, batch, mesh.devices.size)

  graphdef, graphdef_eval, params, rest = init_model(cfg, int(t.seed),
                                                     _compiler_options(config, init=True))
  tx, schedule = make_optimizer(t)
  state = mesh_lib.replicate(state_lib.init_state(params, rest, tx), mesh)
  compile_start = time.perf_counter()
  train_fn, eval_fn = compiled_steps(config, mesh, graphdef, graphdef_eval, state, tx,
                                     schedule, batch, eval_batch)
  compile_seconds = time.perf_counter() - compile_start
  batches = train_batches(config, builder, train_split, train_split, batch=batch, steps=steps,
                          mesh=mesh)
  extra = {"fold": fold, "held_out": held_out, "selection": t.selection,
           "train_subjects": train_subjects, "train_samples": n_train,
           "steps_per_epoch": steps, "batch_size": batch}
  result = loop.fit_fold(out_dir, state, checkpoint_keep=t.checkpoint_keep,
                         checkpoint_async=t.checkpoint_async, train_step=train_fn,
                         train_batches=batches,
                         cfg=loop.FitConfig(epochs=epochs, steps_per_epoch=steps,
                                            selection="last_epoch",
                                            max_bad_steps=t.max_bad_steps),
                         extra_json=extra, on_epoch_end=on_epoch_end)

  preds = predict_split(lambda b: eval_fn(result.selected, b), config, builder, test_split,
                        train_split, batch=eval_batch, mesh=mesh, class_names=names)
  cm = mer_metrics.confusion_matrix([p["label"] for p in preds], [p["pred"] for p in preds],
                                    len(names))
  stats = None
  if config.data.frame_norm == "split":
    stats = mer_records.split_stats(builder, train_split)
  if mesh_lib.is_writer():
    write_json_atomic(out_dir / PREDICTIONS, to_python({
        "fold": fold, "held_out": held_out, "epoch": result.selected_epoch,
        "selection": t.selection, "classes": list(names), "clips": preds,
        "confusion_matrix": cm.tolist()}))
  record = {
      **extra, **loop.result_record(result),
      "final_train_acc": result.history[-1].get("train_acc"),
      "test_clips": len(preds), "test_correct": int(np.trace(cm)),
      "test_acc": float(np.trace(cm) / max(len(preds), 1)),
      "compile_seconds": round(compile_seconds, 2),
      **loop.run_record(mesh, t.compute_dtype, params),
      "frame_norm_stats": stats, "predictions": PREDICTIONS,
      "fold_seconds": round(time.time() - start, 2)}
  if mesh_lib.is_writer():
    write_json_atomic(out_dir / "fold.json", to_python(record))
  return to_python(record)
