"""Model configuration shared by SpotFormer (all variants) and SpoT-GCN.

The defaults are the paper's / authors' code configuration:
``MSSTGT(seq_len=17, num_classes=10, dim=256, heads=4, dim_head=64, mlp_dim=256, dropout=0.1,
emb_dropout=0.1)`` and SpoT-GCN's hidden width 64 with temporal kernels (3, 5, 5, 7).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

NormKind = Literal["batch", "layer"]
Variant = Literal["simul_st", "seq_st", "paral_st", "simul_ts"]

VARIANTS: tuple[str, ...] = ("simul_st", "seq_st", "paral_st", "simul_ts")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the spotting models.

  Attributes:
    dim: token width D of SpotFormer.
    heads: attention heads.
    dim_head: width of one head (inner width = heads * dim_head).
    mlp_dim: hidden width of the feed-forward blocks.
    dropout: dropout on attention probabilities, attention output and FF layers.
    emb_dropout: dropout after the embeddings.
    dropout_rng: where dropout masks come from (``layers.DROPOUT_RNGS``): 'hash' (default: a
      keyed counter hash, SpotFormer trains ~1.2-1.3x faster on a CPU) or 'threefry'
      (``jax.random.bits``). Both draw every element independently with the same rate.
    num_classes: output channels (10: see ``fes_jax.losses`` for the layout).
    seq_len: frames per window T (the temporal position table has seq_len + 1 rows, as the
      reference code allocates, of which the first T are used).
    num_nodes: facial graph nodes V of the input.
    in_channels: input channels per node (flow dx, dy).
    norm: 'batch' (the reference: BatchNorm everywhere) or 'layer' (LayerNorm instead).
    bn_momentum: PyTorch-style BatchNorm momentum (weight of the new batch statistic).
    norm_eps: epsilon of BatchNorm / LayerNorm (PyTorch default 1e-5).
    variant: SpotFormer architecture, see ``VARIANTS``.
    temporal_paddings: paddings of the four stride-2 temporal downsamples (17->8->3->2->1).
    paral_shared: Paral-ST only. True is the paper's "Paral-ST (no addi. para.)": temporal
      layers shared across graph scales and fusion without CNN layers (SpotFormer's budget).
    gcn_hidden: SpoT-GCN channel width.
    gcn_kernels: SpoT-GCN temporal kernel sizes of its four layers (17->15->11->7->1).
    gcn_data_bn: SpoT-GCN only. The reference declares an input BatchNorm over V*C channels
      (its 40 parameters are part of the published 71,474) but never applies it; True applies
      it to the input, ST-GCN style.
  """

  dim: int = 256
  heads: int = 4
  dim_head: int = 64
  mlp_dim: int = 256
  dropout: float = 0.1
  emb_dropout: float = 0.1
  dropout_rng: str = "hash"
  num_classes: int = 10
  seq_len: int = 17
  num_nodes: int = 10
  in_channels: int = 2
  norm: NormKind = "batch"
  bn_momentum: float = 0.1
  norm_eps: float = 1e-5
  variant: Variant = "simul_st"
  temporal_paddings: tuple[int, int, int, int] = (0, 0, 1, 1)
  paral_shared: bool = False
  gcn_hidden: int = 64
  gcn_kernels: tuple[int, int, int, int] = (3, 5, 5, 7)
  gcn_data_bn: bool = False

  def __post_init__(self):
    if self.norm not in ("batch", "layer"):
      raise ValueError(f"norm must be 'batch' or 'layer', got {self.norm!r}")
    if self.dropout_rng not in ("threefry", "hash"):
      raise ValueError(f"dropout_rng must be 'threefry' or 'hash', got {self.dropout_rng!r}")
    if self.variant not in VARIANTS:
      raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "ModelConfig":
    """Builds a config from a dict / ConfigDict, ignoring keys that are not fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in dict(values).items() if k in names}
    for key in ("temporal_paddings", "gcn_kernels"):
      if key in kwargs:
        kwargs[key] = tuple(kwargs[key])
    return cls(**kwargs)

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)
