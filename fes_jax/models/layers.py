"""Building blocks of SpotFormer: norms, attention, feed-forward, temporal convolution.

All blocks work on channels-last node tokens ``x_BxTxVxC`` (batch, frames, graph nodes,
channels). The reference PyTorch code holds the same tokens as (N, T, V, C) or (N, V, T, C)
between layers; BatchNorm statistics are per channel over all tokens in both layouts.

Initialisation follows PyTorch's defaults, because the authors' ``MSSTGT`` never applies its
``_init_weights``: Linear / Conv weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from fes_jax.models.batch_norm import BatchNorm
from fes_jax.models.config import ModelConfig

# PyTorch's kaiming_uniform_(a=sqrt(5)) == U(+-1/sqrt(fan_in)); fan_in counts kernel taps too.
torch_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nnx.Initializer:
  """PyTorch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def over_rows(fn: Callable[[jnp.ndarray], jnp.ndarray], x_NxC: jnp.ndarray) -> jnp.ndarray:
  """``fn`` of an (M, C) matrix applied to the last axis of ``x`` (any number of leading
  axes, flattened into the M rows, then restored)."""
  y_MxD = fn(x_NxC.reshape(-1, x_NxC.shape[-1]))
  return y_MxD.reshape(*x_NxC.shape[:-1], y_MxD.shape[-1])


def matmul_last_axis(x_NxC: jnp.ndarray, kernel_CxD: jnp.ndarray) -> jnp.ndarray:
  """``x @ kernel`` over the last axis of ``x`` (any number of leading axes), computed as one
  2-D matmul on the leading axes flattened into rows.

  Same values as ``x @ kernel``, but the gradient differs in cost: with the leading axes kept,
  the kernel's gradient contracts several axes at once and XLA (CPU) copies the output
  gradient into a transposed layout for it, a strided pass over the largest activations of
  the model, and computes the elementwise work before it twice. Flat, both products read
  row-major operands: SpotFormer's CPU training step ran 27 % faster (README "Speed").
  """
  return over_rows(lambda rows_MxC: rows_MxC @ kernel_CxD, x_NxC)


class Linear(nnx.Linear):
  """``nnx.Linear`` (same parameters, values and dtype handling) applied as one 2-D matmul
  over all leading axes: see :func:`matmul_last_axis` for why."""

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return over_rows(super().__call__, x)


def torch_linear(d_in: int, d_out: int, *, use_bias: bool = True,
                 rngs: nnx.Rngs) -> Linear:
  """``nn.Linear`` with PyTorch's default initialisation; kernel is (d_in, d_out)."""
  return Linear(d_in, d_out, use_bias=use_bias, kernel_init=torch_kernel_init,
                bias_init=torch_bias_init(d_in), rngs=rngs)


def make_norm(cfg: ModelConfig, dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
  """BatchNorm over all tokens (the reference) or LayerNorm over channels (option).

  Both have a scale and a bias of size ``dim``, so parameter counts do not depend on the
  choice. BatchNorm is ``nnx.BatchNorm`` with a closed-form backward pass
  (``fes_jax/models/batch_norm.py``: same values, fewer passes over the activations). Flax's momentum is PyTorch's ``1 - momentum``. Flax keeps the biased batch variance
  as running variance where PyTorch keeps the unbiased one (a factor n/(n-1), n >= B tokens).
  """
  if cfg.norm == "batch":
    return BatchNorm(dim, momentum=1.0 - cfg.bn_momentum, epsilon=cfg.norm_eps, rngs=rngs)
  return nnx.LayerNorm(dim, epsilon=cfg.norm_eps, rngs=rngs)


DROPOUT_RNGS = ("threefry", "hash")


def _fmix32(h_N: jnp.ndarray) -> jnp.ndarray:
  """MurmurHash3's 32-bit finaliser (full avalanche: every input bit flips every output bit
  with probability ~1/2)."""
  h_N = h_N ^ (h_N >> 16)
  h_N = h_N * jnp.uint32(0x85EBCA6B)
  h_N = h_N ^ (h_N >> 13)
  h_N = h_N * jnp.uint32(0xC2B2AE35)
  return h_N ^ (h_N >> 16)


def hash_bits(key: jax.Array, shape: int | Sequence[int]) -> jnp.ndarray:
  """Pseudo-random uint32 words of ``shape``: a keyed counter hash,
  ``fmix32(fmix32(i ^ s0) + s1)`` with i the word's row-major index and (s0, s1) two threefry
  words of ``key``. A few integer operations per word (threefry takes ~100), so masks cost
  almost nothing on a CPU; deterministic given the key, a different stream for every key. The
  index is built from one iota per axis, so a sharded caller's words stay sharded."""
  shape = (shape,) if isinstance(shape, int) else tuple(shape)
  if math.prod(shape) >= 2 ** 32:
    raise ValueError(f"hash_bits: {math.prod(shape)} words exceed the 32-bit counter")
  s = jax.random.bits(key, (2,), jnp.uint32)
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return _fmix32(_fmix32(index ^ s[0]) + s[1])


class Dropout(nnx.Dropout):
  """Inverted dropout as PyTorch's (zero with probability ``rate``, scale the rest by
  ``1 / (1 - rate)``), with cheaper masks than ``nnx.Dropout``: 16-bit uniform draws, two per
  32-bit random word (a third of the time of ``jax.random.bernoulli`` on CPU). The drop
  probability is ``round(rate * 65536) / 65536`` (0.1 -> 0.100006). Same constructor plus
  ``rng`` (``DROPOUT_RNGS``): 'threefry', the words from ``jax.random.bits``; 'hash', one
  :func:`hash_bits` word per element in the input's shape, compared with the same 16-bit
  threshold shifted up (a keyed counter hash: threefry was a quarter of SpotFormer's CPU
  training step; see README "Speed"). Either gives independent draws per element and per
  call; the masks differ between the two. The same ``deterministic`` flag (set by ``train()`` /
  ``eval()``) and its own forked ``dropout`` stream.
  """

  def __init__(self, rate: float, *, rng: str = "threefry", **kwargs):
    if rng not in DROPOUT_RNGS:
      raise ValueError(f"dropout rng must be one of {DROPOUT_RNGS}, got {rng!r}")
    super().__init__(rate, **kwargs)
    self.rng = rng

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    if self.rngs is None:
      raise ValueError("Dropout in train mode needs rngs (a 'dropout' stream)")
    threshold = round(self.rate * 65536)
    if self.rng == "hash":
      # One 32-bit draw per element, in x's own shape: no flatten across a sharded axis (with
      # one, an 8-device step drifted from the 1-device step by 6e-6; tests/test_train.py).
      words = hash_bits(self.rngs(), x.shape)
      keep = words >= jnp.uint32(threshold << 16)
    else:
      n = x.size
      words = jax.random.bits(self.rngs(), ((n + 1) // 2,), jnp.uint32)
      draws = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:n].reshape(x.shape)
      keep = draws >= jnp.uint16(threshold)
    scale = jnp.asarray(1.0 / (1.0 - self.rate), x.dtype)
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


class Attention(nnx.Module):
  """Pre-norm multi-head self-attention along one token axis, with the residual.

  ``axis='graph'`` attends over the V nodes of every frame (spatial graph attention);
  ``axis='temporal'`` attends over the T frames of every node (temporal node attention).
  qkv is one bias-free Linear(D, 3 * H * K) whose output splits as (3, H, K), matching the
  reference's ``chunk(3)`` then ``'b n (h d) -> b h n d'``.
  """

  def __init__(self, cfg: ModelConfig, axis: Literal["graph", "temporal"], *,
               rngs: nnx.Rngs):
    if axis not in ("graph", "temporal"):
      raise ValueError(f"axis must be 'graph' or 'temporal', got {axis!r}")
    self.axis = axis
    self.heads, self.dim_head = cfg.heads, cfg.dim_head
    inner = cfg.heads * cfg.dim_head
    self.scale = cfg.dim_head ** -0.5
    self.norm = make_norm(cfg, cfg.dim, rngs=rngs)
    self.qkv = torch_linear(cfg.dim, 3 * inner, use_bias=False, rngs=rngs)
    project_out = not (cfg.heads == 1 and cfg.dim_head == cfg.dim)
    self.out = torch_linear(inner, cfg.dim, rngs=rngs) if project_out else None
    self.attn_dropout = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)
    self.out_dropout = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
    b, t, v, _ = x_BxTxVxC.shape
    qkv = self.qkv(self.norm(x_BxTxVxC)).reshape(b, t, v, 3, self.heads, self.dim_head)
    q_BxTxVxHxK, k_BxTxVxHxK, v_BxTxVxHxK = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    q_BxTxVxHxK = q_BxTxVxHxK * jnp.asarray(self.scale, qkv.dtype)
    if self.axis == "graph":
      logits = jnp.einsum("btvhk,btwhk->bthvw", q_BxTxVxHxK, k_BxTxVxHxK)
      probs = self.attn_dropout(jax.nn.softmax(logits, axis=-1))
      o_BxTxVxHxK = jnp.einsum("bthvw,btwhk->btvhk", probs, v_BxTxVxHxK)
    else:
      logits = jnp.einsum("btvhk,bsvhk->bvhts", q_BxTxVxHxK, k_BxTxVxHxK)
      probs = self.attn_dropout(jax.nn.softmax(logits, axis=-1))
      o_BxTxVxHxK = jnp.einsum("bvhts,bsvhk->btvhk", probs, v_BxTxVxHxK)
    o_BxTxVxI = o_BxTxVxHxK.reshape(b, t, v, self.heads * self.dim_head)
    if self.out is not None:
      o_BxTxVxI = self.out_dropout(self.out(o_BxTxVxI))
    return x_BxTxVxC + o_BxTxVxI


class FeedForward(nnx.Module):
  """Pre-norm MLP with the residual: norm, Linear, GELU (erf), dropout, Linear, dropout."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.norm = make_norm(cfg, cfg.dim, rngs=rngs)
    self.fc1 = torch_linear(cfg.dim, cfg.mlp_dim, rngs=rngs)
    self.fc2 = torch_linear(cfg.mlp_dim, cfg.dim, rngs=rngs)
    self.dropout1 = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)
    self.dropout2 = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
    h = jax.nn.gelu(self.fc1(self.norm(x_BxTxVxC)), approximate=False)
    return x_BxTxVxC + self.dropout2(self.fc2(self.dropout1(h)))


def temporal_conv(x_BxTxVxC: jnp.ndarray, kernel_KxCxD: jnp.ndarray, *, stride: int,
                  padding: int) -> jnp.ndarray:
  """1-D convolution along T applied to every node (zero padding, no bias).

  ``kernel_KxCxD[k, c, d]`` equals PyTorch's ``Conv1d.weight[d, c, k]``. The K taps are
  strided slices concatenated on channels, so the whole conv is one (2-D) matmul.
  """
  k_size = kernel_KxCxD.shape[0]
  if padding:
    x_BxTxVxC = jnp.pad(x_BxTxVxC, ((0, 0), (padding, padding), (0, 0), (0, 0)))
  t_out = (x_BxTxVxC.shape[1] - k_size) // stride + 1
  if t_out < 1:
    raise ValueError(f"temporal conv: {x_BxTxVxC.shape[1]} padded frames < kernel {k_size}")
  span = stride * (t_out - 1) + 1
  taps = [x_BxTxVxC[:, k:k + span:stride] for k in range(k_size)]
  x_BxTxVxKC = jnp.concatenate(taps, axis=-1) if k_size > 1 else taps[0]
  return matmul_last_axis(x_BxTxVxKC, kernel_KxCxD.reshape(-1, kernel_KxCxD.shape[-1]))


class TemporalConv(nnx.Module):
  """Norm then Conv1d(D, D, k, stride, padding, bias=False): the reference's
  ``TemporalDownsample`` (stride 2); with stride 1 it is Paral-ST's fusion CNN layer."""

  def __init__(self, cfg: ModelConfig, *, padding: int, stride: int = 2, kernel_size: int = 3,
               rngs: nnx.Rngs):
    self.stride, self.padding = stride, padding
    self.norm = make_norm(cfg, cfg.dim, rngs=rngs)
    self.kernel = nnx.Param(
        torch_kernel_init(rngs.params(), (kernel_size, cfg.dim, cfg.dim), jnp.float32))

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
    return temporal_conv(self.norm(x_BxTxVxC), self.kernel[...], stride=self.stride,
                         padding=self.padding)


class NodeEmbedding(nnx.Module):
  """SpotFormer's stem: Linear(C_in, D) per node, norm, + temporal position, + facial part,
  dropout. Position table has ``seq_len + 1`` rows (first T used); both tables ~ N(0, 1)."""

  def __init__(self, cfg: ModelConfig, node_to_part_V: Sequence[int], *, rngs: nnx.Rngs):
    self.proj = torch_linear(cfg.in_channels, cfg.dim, rngs=rngs)
    self.norm = make_norm(cfg, cfg.dim, rngs=rngs)
    num_parts = int(max(node_to_part_V)) + 1
    self.pos_embedding = nnx.Param(jax.random.normal(rngs.params(), (cfg.seq_len + 1, cfg.dim)))
    self.part_embedding = nnx.Param(jax.random.normal(rngs.params(), (num_parts, cfg.dim)))
    self.node_to_part = tuple(int(p) for p in node_to_part_V)
    self.dropout = Dropout(cfg.emb_dropout, rng=cfg.dropout_rng, rngs=rngs)

  def __call__(self, x_BxTxVxC: jnp.ndarray) -> jnp.ndarray:
    t = x_BxTxVxC.shape[1]
    if t > self.pos_embedding.shape[0]:
      raise ValueError(f"{t} frames > position table {self.pos_embedding.shape[0]}")
    h_BxTxVxD = self.norm(self.proj(x_BxTxVxC))
    h_BxTxVxD = h_BxTxVxD + self.pos_embedding[...][:t][None, :, None, :]
    part_VxD = self.part_embedding[...][jnp.asarray(self.node_to_part)]
    return self.dropout(h_BxTxVxD + part_VxD[None, None])
