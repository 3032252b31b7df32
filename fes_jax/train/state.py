"""Train state, AdamW with the reference's weight-decay mask, per-epoch learning-rate decay.

The reference (spotformer.md section 4): AdamW, lr 2e-4, betas (0.7, 0.9) (the paper),
weight decay 0.1 on the weights of Linear / Conv layers only (not biases, norm scales and
biases, position / part embeddings), lr x 0.96 after every epoch. ``optax.adamw`` decays as
``torch.optim.AdamW`` does (``p -= lr * wd * p``, decoupled, scaled by the current lr).

NNX stays functional at the jit boundary: the model is ``nnx.split`` once into a graph
definition (static, one per train / eval mode) and ``params`` (``nnx.Param``) + ``rest``
(BatchNorm statistics and the dropout RNG streams); the state below holds only arrays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from fes_jax.models import ModelConfig, build_model

# Parameter leaf names that get weight decay: Linear / Conv / temporal-conv weights.
DECAYED_NAMES = ("kernel",)


class TrainState(NamedTuple):
  """Everything a train step reads and writes (a pytree of arrays).

  Attributes:
    step: int32, train steps taken (skipped non-finite steps included).
    params: the model's ``nnx.Param`` state (float32 master weights).
    rest: the other model state: BatchNorm statistics, dropout RNG keys and counters.
    opt_state: the optax state (its step count drives the lr schedule; it does not advance
      on a skipped step).
    bad_steps: int32, consecutive steps skipped for a non-finite loss or gradient.
    skipped: int32, skipped steps in total.
  """

  step: jax.Array
  params: nnx.State
  rest: nnx.State
  opt_state: Any
  bad_steps: jax.Array
  skipped: jax.Array


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer part of the ``train`` config section."""

  learning_rate: float = 2e-4
  betas: tuple[float, float] = (0.7, 0.9)
  adam_eps: float = 1e-8
  weight_decay: float = 0.1
  lr_decay_per_epoch: float = 0.96

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "OptimizerConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in dict(values).items() if k in names}
    if "betas" in kwargs:
      kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    return cls(**kwargs)


def _path_names(path: tuple[Any, ...]) -> list[str]:
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
  while names and names[-1] == "value":  # nnx.Variable flattens to its .value
    names.pop()
  return names


def is_decayed(path: tuple[Any, ...]) -> bool:
  """Whether the parameter at this pytree path gets weight decay (its name is a kernel)."""
  names = _path_names(path)
  return bool(names) and names[-1] in DECAYED_NAMES


def weight_decay_mask(params: Any) -> Any:
  """A pytree of bools like ``params``: True on Linear / Conv kernels only."""
  return jax.tree_util.tree_map_with_path(lambda path, _: is_decayed(path), params)


def lr_schedule(cfg: OptimizerConfig, steps_per_epoch: int) -> optax.Schedule:
  """``lr * decay ** floor(step / steps_per_epoch)``: the reference's per-epoch decay."""
  return optax.exponential_decay(cfg.learning_rate, transition_steps=max(1, steps_per_epoch),
                                 decay_rate=cfg.lr_decay_per_epoch, staircase=True)


def make_optimizer(cfg: OptimizerConfig, steps_per_epoch: int,
                   params: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with the weight-decay mask of ``params``; returns (transform, lr schedule)."""
  schedule = lr_schedule(cfg, steps_per_epoch)
  b1, b2 = cfg.betas
  tx = optax.adamw(schedule, b1=b1, b2=b2, eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
                   mask=weight_decay_mask(params))
  return tx, schedule


def init_model(model_name: str, model_cfg: ModelConfig, seed: int
               ) -> tuple[nnx.GraphDef, nnx.GraphDef, nnx.State, nnx.State]:
  """Builds the model from ``seed`` and splits it.

  Parameters come from ``key(seed)``, dropout from ``key(seed + 1)``. The initialisation is
  one jitted function of the seed (the same values as eager construction; a single compile,
  which a persistent compilation cache keeps across folds and runs).

  Returns:
    (graphdef in train mode, graphdef in eval mode, params, rest).
  """
  def create(seed_):
    rngs = nnx.Rngs(params=jax.random.key(seed_), dropout=jax.random.key(seed_ + 1))
    return build_model(model_name, model_cfg, rngs=rngs)

  abstract = nnx.eval_shape(lambda: create(seed))
  abstract.eval()
  graphdef_eval, _, _ = nnx.split(abstract, nnx.Param, ...)
  abstract.train()
  graphdef_train, _, _ = nnx.split(abstract, nnx.Param, ...)

  @jax.jit
  def init(seed_):
    model = create(seed_)
    model.train()
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return params, rest

  params, rest = init(jnp.asarray(seed, jnp.int32))
  return graphdef_train, graphdef_eval, params, rest


def init_state(params: nnx.State, rest: nnx.State,
               tx: optax.GradientTransformation) -> TrainState:
  """The state before the first step."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                    opt_state=tx.init(params), bad_steps=jnp.zeros((), jnp.int32),
                    skipped=jnp.zeros((), jnp.int32))


def count_params_of(params: Any) -> int:
  """Scalars in a parameter tree."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))
