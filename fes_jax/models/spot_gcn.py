"""SpoT-GCN: the authors' earlier multi-scale spatio-temporal GCN (71,474 parameters).

Input ``x_BxTxVxC`` = (B, 17, 10, 2) channels last (reference: (N, 2, T, V)). Four layers,
no temporal padding (17 -> 15 -> 11 -> 7 -> 1), hidden width 64:
  1. Conv(2, 64, (3, 1)) + bias -> graph op on face1 -> BN -> FLGP to 3 nodes -> ReLU
  2. Conv(64, 64, (5, 1)) + bias -> graph op on face2 -> BN -> FLGP to 1 node -> ReLU
  3. Conv(64, 64, (5, 1)) + bias -> BN -> ReLU
  4. Conv(64, 64, (7, 1)) + bias -> BN -> ReLU
  head Conv(64, 10, 1) + bias on the 64-d feature (also returned for the contrastive loss).
Graph op: ``x_w = sum_v x_v L[v, w]`` with L = I - D^-1/2 A D^-1/2 (the code's
``normalize_undigraph``). Conv weights Kaiming-normal (fan_in, gain sqrt(2)); biases PyTorch
default U(+-1/sqrt(fan_in)); no dropout.

Parameters: 576 + 20,672 + 20,672 + 28,864 + head 650 = 71,434 used in the forward pass, plus
the reference's input BatchNorm1d(V * C = 20) (40 parameters) which its ``forward`` never
applies (``cfg.gcn_data_bn=True`` applies it): 71,474 in total as published.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from fes_jax.models.config import ModelConfig
from fes_jax.models.flgp import (FACE_HIERARCHY, FacialGraph, FacialHierarchy, Groups, flgp,
                                 normalized_adjacency)
from fes_jax.models.layers import make_norm, temporal_conv, torch_bias_init
from fes_jax.models.spotformer import ModelOutput

kaiming_normal = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


class GraphConvLayer(nnx.Module):
  """Temporal conv (k, 1) with bias, optional graph op, norm, optional FLGP, ReLU."""

  def __init__(self, cfg: ModelConfig, c_in: int, c_out: int, kernel_size: int, *,
               graph: FacialGraph | None, groups: Groups | None, rngs: nnx.Rngs):
    self.kernel = nnx.Param(kaiming_normal(rngs.params(), (kernel_size, c_in, c_out)))
    self.bias = nnx.Param(torch_bias_init(c_in * kernel_size)(rngs.params(), (c_out,)))
    self.norm = make_norm(cfg, c_out, rngs=rngs)
    self.graph = graph
    self.groups = None if groups is None else tuple(tuple(g) for g in groups)

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
    y = temporal_conv(x_BxTxVxC, self.kernel[...], stride=1, padding=0) + self.bias[...]
    if self.graph is not None:
      laplacian_VxV = jnp.asarray(normalized_adjacency(self.graph), y.dtype)
      y = jnp.einsum("btvc,vw->btwc", y, laplacian_VxV)
    y = self.norm(y)
    if self.groups is not None:
      y = flgp(y, self.groups)
    return jax.nn.relu(y)


class SpotGCN(nnx.Module):
  """SpoT-GCN (the reference's ``Model(in_channels=2, num_class=10, ...)``)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               hierarchy: FacialHierarchy = FACE_HIERARCHY):
    if hierarchy.graphs[0].num_nodes != cfg.num_nodes:
      raise ValueError("hierarchy and config disagree on the node count")
    self.use_data_norm = cfg.gcn_data_bn
    self.data_norm = make_norm(cfg, cfg.num_nodes * cfg.in_channels, rngs=rngs)
    hidden, layers = cfg.gcn_hidden, []
    for i, kernel_size in enumerate(cfg.gcn_kernels):
      graph_level = i if i < len(hierarchy.pools) else None
      layers.append(GraphConvLayer(
          cfg, cfg.in_channels if i == 0 else hidden, hidden, kernel_size,
          graph=None if graph_level is None else hierarchy.graphs[graph_level],
          groups=None if graph_level is None else hierarchy.pools[graph_level], rngs=rngs))
    self.layers = nnx.List(layers)
    self.head = nnx.Linear(hidden, cfg.num_classes, kernel_init=kaiming_normal,
                           bias_init=torch_bias_init(hidden), rngs=rngs)

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> ModelOutput:
    b, t, v, c = x_BxTxVxC.shape
    if self.use_data_norm:  # BatchNorm1d over V * C channels (index v * C + c), ST-GCN style
      x_BxTxVxC = self.data_norm(x_BxTxVxC.reshape(b, t, v * c)).reshape(b, t, v, c)
    for layer in self.layers:
      x_BxTxVxC = layer(x_BxTxVxC)
    if x_BxTxVxC.shape[1:3] != (1, 1):
      raise ValueError(f"expected (B, 1, 1, C) before the head, got {x_BxTxVxC.shape}")
    features_BxC = x_BxTxVxC[:, 0, 0, :]
    return ModelOutput(self.head(features_BxC), features_BxC)
