"""Facial graph hierarchy and Facial Local Graph Pooling (FLGP).

The hierarchy is data: three facial graphs (10 ROI nodes -> 3 facial parts -> 1 face node) and,
between consecutive graphs, the node groups that FLGP max-pools. SpotFormer uses the groups
(FLGP and the facial-part embedding); SpoT-GCN also uses each graph's normalised adjacency.

Node layout of the 10-node graph (the authors' code): nodes 0-2 one eyebrow, 3-5 the other
eyebrow, 6-9 the mouth.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

Groups = tuple[tuple[int, int], ...]  # half-open node ranges [start, end)


@dataclasses.dataclass(frozen=True)
class FacialGraph:
  """One facial graph: node count and undirected edges (no self loops)."""

  name: str
  num_nodes: int
  edges: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class FacialHierarchy:
  """Graphs from fine to coarse; ``pools[i]`` maps ``graphs[i]`` onto ``graphs[i + 1]``."""

  graphs: tuple[FacialGraph, ...]
  pools: tuple[Groups, ...]

  def __post_init__(self):
    if len(self.pools) != len(self.graphs) - 1:
      raise ValueError("need exactly one pooling between consecutive graphs")
    for i, groups in enumerate(self.pools):
      covered = [n for s, e in groups for n in range(s, e)]
      if covered != list(range(self.graphs[i].num_nodes)):
        raise ValueError(f"pool {i} must tile nodes 0..{self.graphs[i].num_nodes - 1} in order")
      if len(groups) != self.graphs[i + 1].num_nodes:
        raise ValueError(f"pool {i} must produce {self.graphs[i + 1].num_nodes} nodes")

  def node_to_group(self, level: int = 0) -> np.ndarray:
    """For every node of ``graphs[level]``, the index of its group in ``pools[level]``."""
    out = np.zeros(self.graphs[level].num_nodes, np.int32)
    for g, (s, e) in enumerate(self.pools[level]):
      out[s:e] = g
    return out


FACE1 = FacialGraph(
    "face1", 10,
    ((1, 2), (0, 1), (4, 3), (5, 4), (8, 6), (8, 7), (6, 9), (7, 9), (0, 3), (3, 8), (0, 8)))
FACE2 = FacialGraph("face2", 3, ((1, 0), (1, 2), (0, 2)))
FACE3 = FacialGraph("face3", 1, ())

FACE_HIERARCHY = FacialHierarchy(
    graphs=(FACE1, FACE2, FACE3),
    pools=(((0, 3), (3, 6), (6, 10)), ((0, 3),)),
)


@jax.custom_vjp
def max_nodes(x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
  """``max`` over axis -2 whose gradient goes to the (first) argmax, as PyTorch's
  ``x.max(dim)``.

  Not ``jnp.max``'s own gradient: that one finds the maximum again by an equality test
  ``x == max(x)``, and XLA may recompute ``x`` in the backward pass with different rounding
  (it does on CPU, jaxlib 0.10.2, in SpotFormer's BatchNorm -> max -> BatchNorm: the gradients
  of every layer before the first FLGP came out ~50 % wrong; see
  tests/test_train.py::test_xla_cpu_max_gradient_bug). The index is computed once here.
  """
  return jnp.max(x_BxTxVxC, axis=-2)


def _max_nodes_fwd(x):
  return jnp.max(x, axis=-2), (jnp.argmax(x, axis=-2), x.shape[-2])


def _max_nodes_bwd(res, g_BxTxC):
  idx_BxTxC, n = res
  return (jax.nn.one_hot(idx_BxTxC, n, axis=-2, dtype=g_BxTxC.dtype) * g_BxTxC[..., None, :],)


max_nodes.defvjp(_max_nodes_fwd, _max_nodes_bwd)


def flgp(x_BxTxVxC: jnp.ndarray, groups: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """Facial local graph pooling: max over each node group (gradient to the argmax).

  Args:
    x_BxTxVxC: node features, nodes on axis -2 (any leading axes).
    groups: half-open node ranges; one output node per range.

  Returns:
    x_BxTxGxC with G = len(groups).
  """
  pooled = [max_nodes(x_BxTxVxC[..., s:e, :]) for s, e in groups]
  return jnp.stack(pooled, axis=-2)


def normalized_adjacency(graph: FacialGraph) -> np.ndarray:
  """``I - D^-1/2 A D^-1/2`` as the authors' ``normalize_undigraph`` (zero-degree -> 0).

  A is the symmetric 0/1 adjacency of the edges (no self loops) and D its degree matrix.
  """
  n = graph.num_nodes
  a_VxV = np.zeros((n, n), np.float64)
  for i, j in graph.edges:
    a_VxV[i, j] = a_VxV[j, i] = 1.0
  degree_V = a_VxV.sum(axis=0)
  inv_sqrt_V = np.where(degree_V > 0, np.power(np.maximum(degree_V, 1e-300), -0.5), 0.0)
  return np.eye(n) - inv_sqrt_V[:, None] * a_VxV * inv_sqrt_V[None, :]


class FLGP(nnx.Module):
  """The reference's ``GraphDownsample``: a norm (BatchNorm2d) then :func:`flgp`."""

  def __init__(self, norm: nnx.Module, groups: Groups):
    self.norm = norm
    self.groups = tuple(tuple(g) for g in groups)

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
    return flgp(self.norm(x_BxTxVxC), self.groups)
