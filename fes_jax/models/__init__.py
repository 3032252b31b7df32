"""Spotting models: SpotFormer (Simul-ST) and its variants, SpoT-GCN.

Every model maps ``x_BxTxVxC`` (B, T=17, V=10, C=2; the reference's (N, C, T, V) transposed
by ``(0, 2, 3, 1)``) to ``ModelOutput(logits_BxO, features_BxD)``. Modules are ``flax.nnx``;
``model.train()`` / ``model.eval()`` switch BatchNorm statistics and dropout. Dropout draws
from the ``dropout`` stream of the ``nnx.Rngs`` given at construction.

CPU notes: eager parameter init compiles faster with 'rbg' keys (``nnx.Rngs(params=
jax.random.key(0, impl="rbg"), ...)``) than with the default threefry; a jitted train step
measured the same with either (dropout masks: see ``layers.Dropout``). Inside a functional
train step, merge with ``nnx.merge(graphdef, params, rest, copy=True)`` under ``jax.grad``
(train-mode BatchNorm writes its statistics there) and return ``nnx.state(model,
nnx.Not(nnx.Param))`` as the new statistics; ``nnx.jit`` with ``nnx.value_and_grad`` works
as is.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from flax import nnx
import jax
import numpy as np

from fes_jax.models.config import VARIANTS, ModelConfig
from fes_jax.models.flgp import (FACE1, FACE2, FACE3, FACE_HIERARCHY, FLGP, FacialGraph,
                                 FacialHierarchy, flgp, normalized_adjacency)
from fes_jax.models.spot_gcn import SpotGCN
from fes_jax.models.spotformer import ModelOutput, SpotFormer, SpotFormerBase
from fes_jax.models.spotformer_variants import ParalST, SeqST

_SPOTFORMER_CLASSES: dict[str, Callable[..., nnx.Module]] = {
    "simul_st": SpotFormer,
    "simul_ts": SpotFormer,
    "seq_st": SeqST,
    "paral_st": ParalST,
}

MODEL_NAMES: tuple[str, ...] = ("spotformer", "spot_gcn") + VARIANTS


def build_model(name: str, cfg: ModelConfig | Mapping[str, Any] | None = None,
                rngs: nnx.Rngs | None = None) -> nnx.Module:
  """Builds a model by name.

  Args:
    name: 'spotformer' (the variant comes from ``cfg.variant``), one of the variant names
      'simul_st' | 'seq_st' | 'paral_st' | 'simul_ts' (overrides ``cfg.variant``), or
      'spot_gcn'.
    cfg: a ``ModelConfig`` or a mapping of its fields; defaults to the paper's configuration.
    rngs: ``nnx.Rngs`` with ``params`` (and ``dropout`` for training) streams (required).
  """
  if rngs is None:
    raise TypeError("build_model needs rngs, e.g. nnx.Rngs(params=0, dropout=1)")
  if cfg is None:
    cfg = ModelConfig()
  elif not isinstance(cfg, ModelConfig):
    cfg = ModelConfig.from_mapping(cfg)
  if name == "spot_gcn":
    return SpotGCN(cfg, rngs=rngs)
  if name in _SPOTFORMER_CLASSES:
    cfg = cfg.replace(variant=name)
  elif name != "spotformer":
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
  return _SPOTFORMER_CLASSES[cfg.variant](cfg, rngs=rngs)


def count_params(model: nnx.Module) -> int:
  """Trainable parameters (``nnx.Param``), like PyTorch's ``parameters()``; BatchNorm running
  statistics (``nnx.BatchStat``) are not counted."""
  leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
  return int(sum(np.prod(leaf.shape) for leaf in leaves))


__all__ = [
    "FACE1", "FACE2", "FACE3", "FACE_HIERARCHY", "FLGP", "FacialGraph", "FacialHierarchy",
    "MODEL_NAMES", "ModelConfig", "ModelOutput", "ParalST", "SeqST", "SpotFormer",
    "SpotFormerBase", "SpotGCN", "VARIANTS", "build_model", "count_params", "flgp",
    "normalized_adjacency",
]
