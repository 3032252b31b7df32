"""SpotFormer (the authors' ``MSSTGT``): Simul-ST, and its Simul-TS variant.

Input ``x_BxTxVxC`` = (B, T=17, V=10, C=2), channels last. The reference takes (N, 2, T, V);
``x_BxTxVxC = x_NxCxTxV.transpose(0, 2, 3, 1)``. Output: ``ModelOutput(logits_BxO,
features_BxD)`` with O = 10 output channels and the D = 256 feature before the head (used by
the supervised contrastive loss).

Simul-ST at the paper's configuration has 3,168,778 trainable parameters:
embedding 6,656 (Linear 768, norm 512, position 18x256, parts 3x256); six attention blocks of
262,912; six feed-forward blocks of 132,096; four temporal downsamples of 197,120; two FLGP
norms of 512; head 2,570.

Simul-ST (reference): per spatio-temporal block, graph attention + FF then temporal attention
+ FF, then FLGP then temporal downsample. Simul-TS (paper Table IV, no public code): temporal
attention + FF first, then graph attention + FF, then temporal downsample then FLGP (the
paper's order of words); identical modules, hence an identical parameter count.
"""

from __future__ import annotations

from typing import NamedTuple

from flax import nnx
import jax.numpy as jnp

from fes_jax.models.config import ModelConfig
from fes_jax.models.flgp import FACE_HIERARCHY, FLGP, FacialHierarchy
from fes_jax.models.layers import (Attention, FeedForward, NodeEmbedding, TemporalConv,
                                   make_norm, torch_linear)


class ModelOutput(NamedTuple):
  """What every spotting model returns."""

  logits: jnp.ndarray  # (B, num_classes), pre-activation
  features: jnp.ndarray  # (B, D), the vector the head reads


class SpotFormerBase(nnx.Module):
  """Parts shared by every SpotFormer variant.

  Builds the embedding, two spatial blocks (graph attention + FF, one per graph scale with
  more than one node), the two FLGP operations, four temporal downsamples, the head and
  ``num_temporal`` temporal blocks (temporal attention + FF; default one per downsample).
  Subclasses define ``__call__``.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               hierarchy: FacialHierarchy = FACE_HIERARCHY, num_temporal: int | None = None):
    if hierarchy.graphs[0].num_nodes != cfg.num_nodes:
      raise ValueError(f"hierarchy has {hierarchy.graphs[0].num_nodes} nodes, "
                       f"config {cfg.num_nodes}")
    self.cfg = cfg
    self.embed = NodeEmbedding(cfg, hierarchy.node_to_group(0), rngs=rngs)
    num_spatial = len(hierarchy.pools)
    self.graph_attn = nnx.List([Attention(cfg, "graph", rngs=rngs) for _ in range(num_spatial)])
    self.graph_ff = nnx.List([FeedForward(cfg, rngs=rngs) for _ in range(num_spatial)])
    self.flgp = nnx.List([FLGP(make_norm(cfg, cfg.dim, rngs=rngs), groups)
                          for groups in hierarchy.pools])
    self.downsample = nnx.List([TemporalConv(cfg, padding=p, rngs=rngs)
                                for p in cfg.temporal_paddings])
    num_temporal = len(cfg.temporal_paddings) if num_temporal is None else num_temporal
    self.temporal_attn = nnx.List([Attention(cfg, "temporal", rngs=rngs)
                                   for _ in range(num_temporal)])
    self.temporal_ff = nnx.List([FeedForward(cfg, rngs=rngs) for _ in range(num_temporal)])
    self.head = torch_linear(cfg.dim, cfg.num_classes, rngs=rngs)

  def spatial(self, level: int, x_BxTxVxD: jnp.ndarray) -> jnp.ndarray:
    """Spatial graph attention layer (attention + FF) at graph scale ``level``."""
    return self.graph_ff[level](self.graph_attn[level](x_BxTxVxD))

  def temporal(self, index: int, x_BxTxVxD: jnp.ndarray) -> jnp.ndarray:
    """Temporal node attention layer (attention + FF) number ``index``."""
    return self.temporal_ff[index](self.temporal_attn[index](x_BxTxVxD))

  def readout(self, x_Bx1x1xD: jnp.ndarray) -> ModelOutput:
    """Head on the single remaining token."""
    if x_Bx1x1xD.shape[1:3] != (1, 1):
      raise ValueError(f"expected one frame and one node before the head, got "
                       f"{x_Bx1x1xD.shape}; check seq_len / temporal_paddings")
    features_BxD = x_Bx1x1xD[:, 0, 0, :]
    return ModelOutput(self.head(features_BxD), features_BxD)


class SpotFormer(SpotFormerBase):
  """Simul-ST (``cfg.variant == 'simul_st'``, the paper's model) or Simul-TS."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               hierarchy: FacialHierarchy = FACE_HIERARCHY):
    if cfg.variant not in ("simul_st", "simul_ts"):
      raise ValueError(f"SpotFormer builds simul_st / simul_ts, not {cfg.variant!r}")
    super().__init__(cfg, rngs=rngs, hierarchy=hierarchy)
    self.temporal_first = cfg.variant == "simul_ts"

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> ModelOutput:
    x = self.embed(x_BxTxVxC)
    num_spatial = len(self.flgp)
    for level in range(num_spatial):  # spatio-temporal blocks: 10 nodes, then 3 nodes
      if self.temporal_first:
        x = self.spatial(level, self.temporal(level, x))
        x = self.flgp[level](self.downsample[level](x))
      else:
        x = self.temporal(level, self.spatial(level, x))
        x = self.downsample[level](self.flgp[level](x))
    for level in range(num_spatial, len(self.downsample)):  # one node left: temporal only
      x = self.downsample[level](self.temporal(level, x))
    return self.readout(x)
