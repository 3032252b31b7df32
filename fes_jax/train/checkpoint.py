"""Per-fold checkpoints with orbax's ``CheckpointManager``: one step per epoch.

``<fold_dir>/checkpoints/<epoch>/`` holds the items

* ``state``: the whole :class:`TrainState` (parameters, optimizer moments, BatchNorm
  statistics, dropout RNG state, step counters), enough to continue bit-exactly;
* ``meta``: JSON: epochs done, the per-epoch history, the selected (best) epoch so far;
* ``best`` (``train.selection == 'validation'`` only): parameters and statistics of the best
  epoch so far, so the choice survives a restart.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed while saving leaves the previous epoch as the latest; on a multi-host run every
process calls save/restore and orbax coordinates them. Typed PRNG keys are stored as their
raw ``key_data`` and re-wrapped on restore.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
  """Typed PRNG key leaves -> their uint32 key data (orbax stores plain arrays)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: Any, like: Any) -> Any:
  """Inverse of :func:`keys_to_data`, with the key implementations of ``like``."""
  return jax.tree.map(
      lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
      if _is_key(ref) else x, tree, like)


def _abstract(tree: Any) -> Any:
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, keys_to_data(tree))


class FoldCheckpoints:
  """Save every epoch, keep the newest ``max_to_keep``, resume from the latest.

  Args:
    directory: ``<fold_dir>/checkpoints``.
    max_to_keep: complete checkpoints kept (older ones are deleted).
    async_save: let orbax write in a background thread (the next epoch starts while the
      previous one is being written); False writes synchronously.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 3,
               async_save: bool = False):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_epoch(self) -> int | None:
    """The newest complete epoch checkpoint, or None."""
    return self._manager.latest_step()

  def all_epochs(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, epoch: int, state: Any, meta: dict[str, Any], best: Any = None) -> None:
    """Saves the state after ``epoch`` epochs (1-based)."""
    items = {"state": ocp.args.StandardSave(keys_to_data(state)),
             "meta": ocp.args.JsonSave(meta)}
    if best is not None:
      items["best"] = ocp.args.StandardSave(keys_to_data(best))
    self._manager.save(epoch, args=ocp.args.Composite(**items))

  def restore(self, epoch: int, state_like: Any, best_like: Any = None
              ) -> tuple[Any, dict[str, Any], Any]:
    """(state, meta, best) of ``epoch``, placed with the shardings of the templates."""
    items = {"state": ocp.args.StandardRestore(_abstract(state_like)),
             "meta": ocp.args.JsonRestore()}
    if best_like is not None:
      items["best"] = ocp.args.StandardRestore(_abstract(best_like))
    out = self._manager.restore(epoch, args=ocp.args.Composite(**items))
    state = data_to_keys(out["state"], state_like)
    best = None if best_like is None else data_to_keys(out["best"], best_like)
    return state, dict(out["meta"]), best

  def wait(self) -> None:
    """Blocks until pending (asynchronous) saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
