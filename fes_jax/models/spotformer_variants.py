"""SpotFormer variants of the paper's Table IV without public code: Seq-ST and Paral-ST.

(Simul-TS lives with Simul-ST in ``spotformer.py``.)

Seq-ST: spatial graph attention + FF, FLGP, spatial graph attention + FF, FLGP (now one node),
then four times temporal attention + FF and a temporal downsample (17->8->3->2->1). It uses
exactly SpotFormer's modules in another order: 3,168,778 parameters.

Paral-ST ("temporal attention at every graph scale, fused upward by a CNN layer + addition";
the design below is ours, from the paper's text):
  * Spatial path as Seq-ST at T = 17: branch 0 = spatial(10 nodes); branch 1 =
    spatial(FLGP(branch 0)) (3 nodes); branch 2 = FLGP(branch 1) (1 node).
  * Four temporal scales (T = 17, 8, 3, 2). At each, every branch runs its own temporal
    attention + FF in parallel (h_b); then fusion goes upward in graph scale:
    y_0 = h_0, y_b = h_b + CNN_{b,k}(flgp(y_{b-1})), where flgp is the max over the facial
    groups and CNN is norm + Conv1d(D, D, 3, stride 1, padding 1, no bias).
  * Each branch then has its own temporal downsample (the 1-node branch uses SpotFormer's
    four; branches 0 and 1 add three each, none after the last scale where only the fused
    1-node branch goes on to T = 1 and the head).
  Parameters: SpotFormer's 3,168,778 + 8 temporal attention + FF (3,160,064) + 6 downsamples
  (1,182,720) + 8 fusion CNNs (1,576,960) = 9,088,522.
  ``cfg.paral_shared=True`` is the paper's "Paral-ST (no addi. para.)": the temporal attention,
  FF and downsample of each temporal scale are shared by all branches (run once on the
  branches concatenated along the node axis, so one set of norm statistics) and fusion is the
  parameter-free flgp + addition: exactly SpotFormer's 3,168,778 parameters.
"""

from __future__ import annotations

from flax import nnx
import jax.numpy as jnp
import numpy as np

from fes_jax.models.config import ModelConfig
from fes_jax.models.flgp import FACE_HIERARCHY, FacialHierarchy, flgp
from fes_jax.models.layers import TemporalConv
from fes_jax.models.spotformer import ModelOutput, SpotFormerBase


class SeqST(SpotFormerBase):
  """Spatial layers + FLGP down to one node, then temporal layers (``variant='seq_st'``)."""

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> ModelOutput:
    x = self.embed(x_BxTxVxC)
    for level in range(len(self.flgp)):
      x = self.flgp[level](self.spatial(level, x))
    for level in range(len(self.downsample)):
      x = self.downsample[level](self.temporal(level, x))
    return self.readout(x)


class ParalST(SpotFormerBase):
  """Temporal attention at every graph scale with upward CNN + addition fusion."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               hierarchy: FacialHierarchy = FACE_HIERARCHY):
    self.num_levels = len(cfg.temporal_paddings)
    self.num_branches = len(hierarchy.graphs)
    self.shared = cfg.paral_shared
    num_temporal = self.num_levels * (1 if self.shared else self.num_branches)
    super().__init__(cfg, rngs=rngs, hierarchy=hierarchy, num_temporal=num_temporal)
    self.pools = hierarchy.pools
    self.node_counts = tuple(g.num_nodes for g in hierarchy.graphs)
    if not self.shared:
      finer = range(self.num_branches - 1)
      self.branch_downsample = nnx.List([  # index: branch * (levels - 1) + level
          TemporalConv(cfg, padding=p, rngs=rngs)
          for _ in finer for p in cfg.temporal_paddings[:-1]])
      self.fuse = nnx.List([  # index: level * (branches - 1) + (target branch - 1)
          TemporalConv(cfg, padding=1, stride=1, rngs=rngs)
          for _ in range(self.num_levels) for _ in finer])

  def _branch_inputs(self, x_BxTxVxD: jnp.ndarray) -> list[jnp.ndarray]:
    """Spatial path at full frame rate: one tensor per graph scale (10, 3, 1 nodes)."""
    branches = []
    for level in range(len(self.flgp)):
      x_BxTxVxD = self.spatial(level, x_BxTxVxD)
      branches.append(x_BxTxVxD)
      x_BxTxVxD = self.flgp[level](x_BxTxVxD)
    return branches + [x_BxTxVxD]

  def _fuse_up(self, level: int, h: list[jnp.ndarray]) -> list[jnp.ndarray]:
    """y_0 = h_0; y_b = h_b + CNN(flgp(y_{b-1})) (CNN omitted when shared)."""
    fused = [h[0]]
    for b in range(1, self.num_branches):
      pooled = flgp(fused[b - 1], self.pools[b - 1])
      if not self.shared:
        pooled = self.fuse[level * (self.num_branches - 1) + b - 1](pooled)
      fused.append(h[b] + pooled)
    return fused

  def _level_shared(self, level: int, branches: list[jnp.ndarray]) -> list[jnp.ndarray]:
    splits = np.cumsum(self.node_counts)[:-1].tolist()
    h = jnp.split(self.temporal(level, jnp.concatenate(branches, axis=2)), splits, axis=2)
    fused = self._fuse_up(level, list(h))
    if level == self.num_levels - 1:
      return [self.downsample[level](fused[-1])]
    down = self.downsample[level](jnp.concatenate(fused, axis=2))
    return list(jnp.split(down, splits, axis=2))

  def _level_separate(self, level: int, branches: list[jnp.ndarray]) -> list[jnp.ndarray]:
    h = [self.temporal(b * self.num_levels + level, x) for b, x in enumerate(branches)]
    fused = self._fuse_up(level, h)
    if level == self.num_levels - 1:
      return [self.downsample[level](fused[-1])]
    out = [self.branch_downsample[b * (self.num_levels - 1) + level](y)
           for b, y in enumerate(fused[:-1])]
    return out + [self.downsample[level](fused[-1])]

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> ModelOutput:
    branches = self._branch_inputs(self.embed(x_BxTxVxC))
    for level in range(self.num_levels):
      step = self._level_shared if self.shared else self._level_separate
      branches = step(level, branches)
    return self.readout(branches[-1])
