"""A trained fold's model, restored for inference on new videos.

``find_run(checkpoint)`` resolves what ``--checkpoint`` names: a fold directory
(``<workdir>/folds/fold_XXX``), its ``checkpoints/`` directory, or one epoch's directory
(``checkpoints/<epoch>``); the run's config is the ``config.json`` of the workdir above it.
``load(run, epoch)`` rebuilds the model the config describes (any ``fes_jax.models`` name) and
restores the chosen epoch's parameters and BatchNorm statistics from the orbax checkpoint.

The default epoch is the fold's selected one (``fold.json``); with ``train.selection ==
'validation'`` it may be older than every kept checkpoint, and is then read from the newest
checkpoint's ``best`` item (the selected epoch's parameters, see fes_jax/train/checkpoint.py).
Without ``fold.json`` (a fold still training or killed), the newest checkpoint is used.

A fold trained fold-parallel (``train.fold_parallel``) has no checkpoints of its own: its
group's stacked states are in ``folds/group_<first>_<last>/checkpoints`` (one leading fold
axis, the group's folds listed in each checkpoint's ``meta``); its slice is restored.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass(frozen=True)
class Run:
  """Where a fold's checkpoints and its run's config are."""

  checkpoints: pathlib.Path  # <fold_dir>/checkpoints, or its fold-parallel group's
  fold_dir: pathlib.Path
  config_path: pathlib.Path
  epoch: int | None  # named by the path (checkpoints/<epoch>), else None
  fold: int | None = None  # set when the checkpoints are a group's stacked states


def _epochs(checkpoints: pathlib.Path) -> list[int]:
  """Complete epoch checkpoints (orbax renames a step directory into place when written)."""
  return sorted(int(p.name) for p in checkpoints.iterdir() if p.is_dir() and p.name.isdigit())


def find_run(checkpoint: str | pathlib.Path, config: str | pathlib.Path | None = None) -> Run:
  """Resolves ``--checkpoint`` (fold dir, its checkpoints dir, or an epoch dir) and the config.

  Raises:
    FileNotFoundError: no such directory, no checkpoints in it, or no config.json above it
      (and none given).
  """
  path = pathlib.Path(checkpoint).expanduser().absolute()
  if not path.is_dir():
    raise FileNotFoundError(f"checkpoint directory {path} does not exist")
  epoch = None
  if path.name.isdigit() and path.parent.name == CHECKPOINTS:
    epoch, path = int(path.name), path.parent
  if path.name != CHECKPOINTS and (path / CHECKPOINTS).is_dir():
    path = path / CHECKPOINTS
  group_fold = None
  if path.name != CHECKPOINTS and re.fullmatch(r"fold_\d+", path.name):
    group = _group_checkpoints(path)
    if group is not None:  # trained fold-parallel: the group's stacked checkpoints
      fold_dir, group_fold, path = path, int(path.name[5:]), group
  if group_fold is None and "group_" in (path.name[:6], path.parent.name[:6]):
    raise FileNotFoundError(f"{path} holds the stacked states of several folds: pass one fold's "
                            "directory (<workdir>/folds/fold_XXX)")
  if not path.is_dir() or not _epochs(path):
    raise FileNotFoundError(
        f"{path} holds no checkpoints: pass a fold directory (<workdir>/folds/fold_XXX) or its "
        "checkpoints/ directory, after its fold has trained at least one epoch")
  if group_fold is None:
    fold_dir = path.parent if path.name == CHECKPOINTS else path
  if config is None:
    found = [d / CONFIG_FILE for d in [fold_dir, *fold_dir.parents][:4]
             if (d / CONFIG_FILE).is_file()]
    if not found:
      raise FileNotFoundError(
          f"no {CONFIG_FILE} found above {fold_dir} (a run's workdir holds one); pass "
          "--config=<workdir>/config.json or a configs/*.py file")
    config = found[0]
  config = pathlib.Path(config).expanduser()
  if not config.is_file() and not str(config).partition(":")[0].endswith(".py"):
    raise FileNotFoundError(f"config file {config} does not exist")
  return Run(path, fold_dir, config, epoch, group_fold)


def _group_checkpoints(fold_dir: pathlib.Path) -> pathlib.Path | None:
  """``folds/group_<first>_<last>/checkpoints`` of a fold trained fold-parallel, or None."""
  k = int(fold_dir.name[5:])
  for group in sorted(fold_dir.parent.glob("group_*_*")):
    match = re.fullmatch(r"group_(\d+)_(\d+)", group.name)
    if match and int(match[1]) <= k <= int(match[2]) and (group / CHECKPOINTS).is_dir():
      return group / CHECKPOINTS
  return None


def load_config(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """A run's ``config.json``, or a config file ``configs/x.py[:args]`` (its ``get_config``)."""
  text = str(path)
  file, _, arg = text.partition(":") if text.partition(":")[0].endswith(".py") else (text, "", "")
  if file.endswith(".py"):
    import importlib.util  # pylint: disable=import-outside-toplevel

    if not pathlib.Path(file).is_file():
      raise FileNotFoundError(f"config file {file} does not exist")
    spec = importlib.util.spec_from_file_location(pathlib.Path(file).stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(arg or None)
  else:
    try:
      cfg = ml_collections.ConfigDict(json.loads(pathlib.Path(file).read_text()))
    except ValueError as e:
      raise ValueError(f"{file}: not a JSON config ({e})") from None
  missing = [s for s in ("preprocess", "model", "train", "eval") if s not in cfg]
  if missing:
    raise ValueError(f"{path}: config lacks the section(s) {missing} a trained run has")
  return cfg


@dataclasses.dataclass
class Restored:
  """An eval-mode model: ``predict(x_NxTxVxC) -> probs (N, 10)``."""

  graphdef: Any
  params: Any
  rest: Any
  model_name: str
  num_nodes: int
  seq_len: int
  epoch: int
  source: str  # how the epoch was chosen

  def predict_fn(self) -> Callable[[np.ndarray], np.ndarray]:
    """A jitted batch forward (compiled once per batch shape, cached per model graph)."""
    fn = _jitted(self.graphdef)
    return lambda x: np.asarray(fn(self.params, self.rest, jnp.asarray(x, jnp.float32)))


_JIT_CACHE: dict[Any, Any] = {}


def _jitted(graphdef: Any):
  if graphdef not in _JIT_CACHE:
    from flax import nnx  # pylint: disable=import-outside-toplevel
    from fes_jax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    @jax.jit
    def forward(params, rest, x):
      model = nnx.merge(graphdef, params, rest, copy=True)
      return step_lib.probabilities(model(x).logits)

    _JIT_CACHE.clear()
    _JIT_CACHE[graphdef] = forward
  return _JIT_CACHE[graphdef]


def _selected_epoch(fold_dir: pathlib.Path) -> int | None:
  path = fold_dir / "fold.json"
  if not path.is_file():
    return None
  value = json.loads(path.read_text()).get("selected_epoch")
  return None if value is None else int(value)


def _abstract_state(name: str, model_cfg: Any, train_cfg: Any) -> tuple[Any, Any, Any]:
  """(eval graphdef, params, TrainState) of the model as shapes only (no init compile)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from fes_jax.models import build_model  # pylint: disable=import-outside-toplevel
  from fes_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel

  abstract = nnx.eval_shape(lambda: build_model(name, model_cfg,
                                                rngs=nnx.Rngs(params=0, dropout=1)))
  abstract.eval()
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  tx, _ = state_lib.make_optimizer(state_lib.OptimizerConfig.from_mapping(train_cfg), 1, params)
  scalar = jax.ShapeDtypeStruct((), jnp.int32)
  state = state_lib.TrainState(step=scalar, params=params, rest=rest,
                               opt_state=jax.eval_shape(tx.init, params), bad_steps=scalar,
                               skipped=scalar)
  return graphdef, (params, rest), state


def _is_key(x: Any) -> bool:
  return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _as_stored(tree: Any, stacked: int | None = None) -> Any:
  """Shapes as orbax stored them (typed keys as their uint32 data), on the default device;
  ``stacked``: with a leading fold axis of that size (a fold-parallel group's state)."""
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  lead = () if stacked is None else (stacked,)

  def leaf(x):
    if _is_key(x):
      x = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(lead + tuple(x.shape), x.dtype, sharding=sharding)
  return jax.tree.map(leaf, tree)


def _keys_back(tree: Any, like: Any) -> Any:
  """Key data -> typed keys where ``like`` has keys (the default PRNG implementation, which
  training used; eval mode draws no random numbers)."""
  return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x) if _is_key(ref) else x,
                      tree, like)


def load(run: Run, config: ml_collections.ConfigDict, epoch: int | None = None) -> Restored:
  """Rebuilds the model of ``config`` and restores an epoch (default: see the module doc).

  The template is abstract (``nnx.eval_shape``): nothing is initialised or compiled; orbax
  reads the parameters and statistics straight onto the default device.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from fes_jax.models import ModelConfig  # pylint: disable=import-outside-toplevel

  available = _epochs(run.checkpoints)
  epoch = run.epoch if epoch is None else epoch
  use_best, source = False, "asked for (--epoch, or the checkpoint path)"
  if epoch is None:
    selected = _selected_epoch(run.fold_dir)
    if selected is None:
      epoch, source = available[-1], "newest checkpoint (no fold.json)"
    elif selected in available:
      epoch, source = selected, "the fold's selected epoch (fold.json)"
    elif (run.checkpoints / str(available[-1]) / "best").is_dir():
      epoch, use_best, source = selected, True, (
          f"the fold's selected epoch (fold.json), from checkpoint {available[-1]}'s best item")
    else:
      raise FileNotFoundError(
          f"the fold's selected epoch {selected} (fold.json) has no checkpoint left in "
          f"{run.checkpoints} (kept: {available}); pass --epoch=N")
  elif epoch not in available:
    raise FileNotFoundError(f"no checkpoint of epoch {epoch} in {run.checkpoints}; kept "
                            f"epochs: {available}")
  model_cfg = ModelConfig.from_mapping(config.model)
  name = config.model.name
  graphdef, best_like, state_like = _abstract_state(name, model_cfg, config.train)
  step = available[-1] if use_best else epoch
  manager = ocp.CheckpointManager(run.checkpoints,
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    index, stacked = None, None
    if run.fold is not None:  # a fold-parallel group: fold `index` of `stacked` folds
      folds = list(manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))["meta"].get("folds", []))
      if run.fold not in folds:
        raise ValueError(f"{run.checkpoints / str(step)} holds folds {folds}, not fold "
                         f"{run.fold}")
      index, stacked = folds.index(run.fold), len(folds)
    items = {"meta": ocp.args.JsonRestore()}
    if use_best:
      items["best"] = ocp.args.StandardRestore(_as_stored(best_like))
    else:
      items["state"] = ocp.args.StandardRestore(_as_stored(state_like, stacked))
    out = manager.restore(step, args=ocp.args.Composite(**items))
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"checkpoint {run.checkpoints / str(step)} does not fit the config's "
                     f"model {name!r} ({run.config_path}): {e}") from e
  finally:
    manager.close()
  stored_state = out["best"] if use_best else out["state"]
  if index is not None:
    stored_state = jax.tree.map(lambda x: x[index], stored_state)
  if use_best:
    meta = dict(out["meta"])
    if int(meta.get("best_epoch", -1)) != epoch:
      raise ValueError(f"checkpoint {step}'s best item is epoch {meta.get('best_epoch')}, "
                       f"not the selected epoch {epoch}; pass --epoch=N")
    params, rest = _keys_back(stored_state, best_like)
  else:
    state = _keys_back(stored_state, state_like)
    params, rest = state.params, state.rest
  return Restored(graphdef, params, rest, name, model_cfg.num_nodes, model_cfg.seq_len,
                  int(epoch), source)
