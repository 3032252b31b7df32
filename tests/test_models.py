"""Models: parameter counts, output shapes, train/eval behaviour, FLGP and graph helpers."""

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fes_jax.models import (FACE1, FACE2, FACE3, FACE_HIERARCHY, FacialGraph, ModelConfig,
                            build_model, count_params, flgp, normalized_adjacency)
from fes_jax.models.layers import Attention, Dropout, FeedForward, Linear, NodeEmbedding, \
    TemporalConv, temporal_conv

PAPER = ModelConfig()
LAYER = PAPER.replace(norm="layer")
SMALL = ModelConfig(dim=16, heads=2, dim_head=8, mlp_dim=24)
B = 3


@functools.cache
def _abstract(name, cfg=PAPER):
  """The model with abstract (shape-only) variables: no init compute, no compile."""
  return nnx.eval_shape(lambda: build_model(name, cfg, rngs=nnx.Rngs(0)))


def _unused_params(model):
  """Paths of parameters that no operation of the (eval-mode) forward pass reads.

  Found on the jaxpr, so nothing is compiled; a parameter feeding any top-level equation
  (including nested calls) counts as used.
  """
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.ShapeDtypeStruct((2, 17, 10, 2), jnp.float32)
  closed = jax.make_jaxpr(lambda p, r, x: nnx.merge(graphdef, p, r)(x))(params, rest, x)
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(params)]
  used = {id(v) for eqn in closed.jaxpr.eqns for v in eqn.invars}
  used |= {id(v) for v in closed.jaxpr.outvars}
  return [p for p, v in zip(paths, closed.jaxpr.invars[:len(paths)]) if id(v) not in used]


def _abstract_forward(model, batch=B):
  """Output shapes of a forward pass, traced with ``nnx.split`` / ``nnx.merge``."""
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((batch, 17, 10, 2), jnp.float32)
  return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)


def _rngs(seed=0):
  # 'rbg' keys: eager parameter init compiles faster than with threefry on XLA:CPU.
  return nnx.Rngs(params=jax.random.key(seed, impl="rbg"),
                  dropout=jax.random.key(seed + 1, impl="rbg"))


# Tests run small graphs; LLVM's expensive passes cost more compile time than they save.
# (Not xla_backend_optimization_level=0: on jax 0.10.2 it gave NaN gradients for SpoT-GCN.)
_FAST_COMPILE = {"xla_llvm_disable_expensive_passes": True}


@functools.cache
def _jitted_apply(graphdef):
  def apply(state, x):
    model = nnx.merge(graphdef, state)
    out = model(x)
    return out, nnx.state(model)  # updated BatchNorm statistics and RNG counts

  return jax.jit(apply, compiler_options=_FAST_COMPILE)


def _forward(model, x):
  """Jitted forward across the functional boundary (split, pure call, update)."""
  graphdef, state = nnx.split(model)
  out, state = _jitted_apply(graphdef)(state, x)
  nnx.update(model, state)
  return out


def _normal(seed, shape):
  """Test inputs from numpy (no XLA compilation for eager random ops)."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _perturb_others(x):
  """x with every sample but the first replaced: same shape, so no recompilation."""
  y = np.array(x, copy=True)
  y[1:] = 2.0 * y[1:] + 1.0
  return y


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("name, cfg, expected", [
    ("simul_st", PAPER, 3_168_778),
    ("spotformer", PAPER, 3_168_778),
    ("seq_st", PAPER, 3_168_778),
    ("simul_ts", PAPER, 3_168_778),
    ("paral_st", PAPER, 9_088_522),
    ("paral_st", PAPER.replace(paral_shared=True), 3_168_778),
    ("simul_st", LAYER, 3_168_778),
    ("seq_st", LAYER, 3_168_778),
    ("simul_ts", LAYER, 3_168_778),
    ("paral_st", LAYER, 9_088_522),
    ("paral_st", LAYER.replace(paral_shared=True), 3_168_778),
    ("spot_gcn", PAPER, 71_474),
    ("spot_gcn", LAYER, 71_474),
])
def test_parameter_counts(name, cfg, expected):
  assert count_params(_abstract(name, cfg)) == expected


def test_parameter_breakdown_matches_reference():
  def count(make):
    return count_params(nnx.eval_shape(make))

  attn = count(lambda: Attention(PAPER, "graph", rngs=nnx.Rngs(0)))
  ff = count(lambda: FeedForward(PAPER, rngs=nnx.Rngs(0)))
  down = count(lambda: TemporalConv(PAPER, padding=0, rngs=nnx.Rngs(0)))
  embed = count(lambda: NodeEmbedding(PAPER, FACE_HIERARCHY.node_to_group(0), rngs=nnx.Rngs(0)))
  assert (attn, ff, down) == (262_912, 132_096, 197_120)
  assert count(lambda: Attention(PAPER, "temporal", rngs=nnx.Rngs(0))) == attn
  assert embed == 2 * 256 + 256 + 512 + 18 * 256 + 3 * 256 == 6_656
  head, flgp_norms = 256 * 10 + 10, 2 * 512
  assert embed + 6 * attn + 6 * ff + 4 * down + flgp_norms + head == 3_168_778
  model = _abstract("simul_st")
  assert (len(model.graph_attn), len(model.temporal_attn), len(model.graph_ff),
          len(model.temporal_ff), len(model.downsample), len(model.flgp)) == (2, 4, 2, 4, 4, 2)
  assert count_params(model.head) == head
  assert [count_params(m) for m in model.downsample] == [down] * 4
  # Paral-ST's extra: 8 temporal attention + FF, 6 branch downsamples, 8 fusion CNNs.
  paral = _abstract("paral_st")
  assert len(paral.temporal_attn) == 12 and len(paral.branch_downsample) == 6
  assert len(paral.fuse) == 8
  assert 3_168_778 + 8 * (attn + ff) + 6 * down + 8 * down == 9_088_522


def test_spot_gcn_breakdown():
  model = _abstract("spot_gcn")
  per_layer = [count_params(layer) for layer in model.layers]
  assert per_layer == [2 * 64 * 3 + 64 + 128, 64 * 64 * 5 + 64 + 128,
                       64 * 64 * 5 + 64 + 128, 64 * 64 * 7 + 64 + 128]
  assert count_params(model.head) == 650
  assert count_params(model.data_norm) == 40  # declared, unused by default (as the reference)
  assert sum(per_layer) + 650 == 71_434


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name, cfg, dim, mode", [
    ("simul_st", PAPER, 256, "train"), ("simul_st", PAPER, 256, "eval"),
    ("seq_st", PAPER, 256, "train"), ("paral_st", PAPER, 256, "train"),
    ("simul_ts", PAPER, 256, "train"), ("paral_st", PAPER.replace(paral_shared=True), 256, "train"),
    ("simul_st", LAYER, 256, "train"), ("simul_st", LAYER, 256, "eval"),
    ("seq_st", LAYER, 256, "train"), ("simul_ts", LAYER, 256, "train"),
    ("paral_st", LAYER, 256, "train"), ("spot_gcn", LAYER, 64, "train"),
    ("spot_gcn", PAPER, 64, "train"),
    ("spot_gcn", PAPER, 64, "eval"), ("spot_gcn", PAPER.replace(gcn_data_bn=True), 64, "train"),
])
def test_output_shapes(name, cfg, dim, mode):
  model = _abstract(name, cfg)
  getattr(model, mode)()
  out = _abstract_forward(model)
  assert out.logits.shape == (B, 10) and out.features.shape == (B, dim)
  assert out.logits.dtype == jnp.float32


@pytest.mark.parametrize("seq_len, frames, message", [
    (17, 19, "position table"),  # more frames than the 18-row position table
    (25, 25, "one frame and one node"),  # 25 -> 12 -> 5 -> 3 -> 2 frames, not 1
])
def test_wrong_window_length_is_rejected(seq_len, frames, message):
  graphdef, state = nnx.split(_abstract("simul_st", PAPER.replace(seq_len=seq_len)))
  x = jax.ShapeDtypeStruct((2, frames, 10, 2), jnp.float32)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)


def test_build_model_names_and_mapping_config():
  model = nnx.eval_shape(lambda: build_model("seq_st", {"dim": 32, "heads": 2, "dim_head": 16,
                                                        "mlp_dim": 32, "unused": 1},
                                             rngs=nnx.Rngs(0)))
  assert type(model).__name__ == "SeqST" and model.cfg.variant == "seq_st"
  with pytest.raises(ValueError):
    build_model("nope", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError):
    ModelConfig(norm="group")


# --------------------------------------------------------------------------- modes


def _batch_stats(model):
  return [np.asarray(v) for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.BatchStat))]


def _apply_without_update(model, x):
  """Forward from the model's current state (same dropout keys every call), no update."""
  graphdef, state = nnx.split(model)
  return _jitted_apply(graphdef)(state, x)[0]


def _np(v):
  return np.asarray(v[...], np.float64)


def _bn_eval(norm, x):
  """BatchNorm in eval mode over the last axis (PyTorch's BatchNorm1d/2d on channels)."""
  return ((x - _np(norm.mean)) / np.sqrt(_np(norm.var) + norm.epsilon) * _np(norm.scale)
          + _np(norm.bias))


def _attention_ref(attn, x_BxLxD):
  """The reference's GraphAttention / TemporalAttention on (batch, L, D), without residual."""
  h = _bn_eval(attn.norm, x_BxLxD) @ _np(attn.qkv.kernel)
  q, k, v = np.split(h, 3, axis=-1)
  split = lambda a: a.reshape(*a.shape[:2], attn.heads, -1).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)  # b h n d
  dots = q @ k.transpose(0, 1, 3, 2) * attn.dim_head ** -0.5
  p = np.exp(dots - dots.max(-1, keepdims=True))
  out = (p / p.sum(-1, keepdims=True)) @ v
  out = out.transpose(0, 2, 1, 3).reshape(*x_BxLxD.shape[:2], -1)
  return out @ _np(attn.out.kernel) + _np(attn.out.bias)


def _ff_ref(ff, x):
  h = _bn_eval(ff.norm, x) @ _np(ff.fc1.kernel) + _np(ff.fc1.bias)
  h = 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))  # exact GELU
  return h @ _np(ff.fc2.kernel) + _np(ff.fc2.bias)


def _simul_st_reference(model, x_NxCxTxV):
  """Eval-mode forward written after the authors' MSSTGT (its layouts and permutes)."""
  n, c, t, v = x_NxCxTxV.shape
  x = x_NxCxTxV.transpose(0, 3, 2, 1).reshape(n, v * t, c)
  x = x @ _np(model.embed.proj.kernel) + _np(model.embed.proj.bias)
  d = x.shape[-1]
  x = _bn_eval(model.embed.norm, x).reshape(n * v, t, d)
  x = x + _np(model.embed.pos_embedding)[None, :t]
  x = x.reshape(n, v, t, d).transpose(0, 2, 1, 3).reshape(n * t, v, d)
  part = _np(model.embed.part_embedding)
  x[:, 0:3] += part[0]
  x[:, 3:6] += part[1]
  x[:, 6:10] += part[2]
  x = x.reshape(n, t, v, d)

  def graph_layer(i, x):  # (n, t, v, d)
    x = _attention_ref(model.graph_attn[i], x.reshape(-1, *x.shape[2:])).reshape(x.shape) + x
    return _ff_ref(model.graph_ff[i], x) + x

  def temporal_layer(i, x):  # (n, v, t, d)
    x = _attention_ref(model.temporal_attn[i], x.reshape(-1, *x.shape[2:])).reshape(x.shape) + x
    return _ff_ref(model.temporal_ff[i], x) + x

  def gdown(i, x, pool):  # (n, v, t, d), BatchNorm2d then max over node groups
    x = _bn_eval(model.flgp[i].norm, x)
    return np.concatenate([x[:, s:e].max(axis=1, keepdims=True) for s, e in pool], axis=1)

  def tdown(i, x, pad):  # (n, v, t, d), BatchNorm1d then Conv1d(k=3, stride 2, no bias)
    x = _bn_eval(model.downsample[i].norm, x)
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (0, 0)))
    w = _np(model.downsample[i].kernel)  # k, c_in, c_out
    t_out = (x.shape[2] - 3) // 2 + 1
    return np.stack([sum(x[:, :, 2 * j + k] @ w[k] for k in range(3)) for j in range(t_out)],
                    axis=2)

  x1 = graph_layer(0, x).transpose(0, 2, 1, 3)
  x1 = temporal_layer(0, x1)
  x2 = tdown(0, gdown(0, x1, [[0, 3], [3, 6], [6, 10]]), 0)
  x2 = graph_layer(1, x2.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
  x2 = temporal_layer(1, x2)
  x3 = tdown(1, gdown(1, x2, [[0, 3]]), 0)
  x3 = tdown(2, temporal_layer(2, x3), 1)
  x3 = tdown(3, temporal_layer(3, x3), 1)
  features = x3[:, 0, 0]
  return features @ _np(model.head.kernel) + _np(model.head.bias), features


def test_spotformer_train_vs_eval():
  model = build_model("simul_st", SMALL, rngs=_rngs())
  x = _normal(0, (4, 17, 10, 2))
  # Train mode, same state (same dropout masks): BatchNorm couples a sample to its batch.
  same_masks = [_apply_without_update(model, v).logits[0] for v in (x, _perturb_others(x))]
  assert not np.allclose(*same_masks, rtol=1e-5, atol=1e-5)
  stats0 = _batch_stats(model)
  a, b = _forward(model, x), _forward(model, x)
  assert not np.allclose(a.logits, b.logits)  # dropout draws new masks every call
  stats1 = _batch_stats(model)
  assert len(stats0) == 2 * 19  # mean and var of 19 BatchNorms
  assert all(not np.allclose(s0, s1) for s0, s1 in zip(stats0, stats1))  # running stats moved
  model.eval()
  c, d = _forward(model, x), _forward(model, x)
  np.testing.assert_array_equal(c.logits, d.logits)
  for s1, s2 in zip(stats1, _batch_stats(model)):
    np.testing.assert_array_equal(s1, s2)  # eval leaves running statistics alone
  assert not np.allclose(a.logits, c.logits)
  # Eval mode: a sample's output does not depend on the rest of its batch.
  np.testing.assert_allclose(_forward(model, _perturb_others(x)).logits[0], c.logits[0],
                             rtol=1e-5, atol=1e-5)
  assert np.isfinite(np.asarray(c.features)).all()
  # Matches a numpy forward written after the reference code (input in its (N, C, T, V)).
  logits, features = _simul_st_reference(model, x.transpose(0, 3, 1, 2).astype(np.float64))
  np.testing.assert_allclose(c.features, features, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(c.logits, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_dropout_and_norm_option_in_train_mode(norm):
  block = FeedForward(SMALL.replace(norm=norm), rngs=_rngs())
  x = _normal(5, (3, 4, 5, SMALL.dim))
  # Same state (same dropout keys): identical masks, so only the norm can couple samples.
  same_masks = [_apply_without_update(block, v)[0] for v in (x, _perturb_others(x))]
  assert np.allclose(*same_masks, rtol=1e-5, atol=1e-5) == (norm == "layer")
  assert len(_batch_stats(block)) == (2 if norm == "batch" else 0)
  # Successive train calls draw new dropout masks; eval mode is deterministic.
  a, b = _forward(block, x), _forward(block, x)
  assert not np.allclose(a, b)
  block.eval()
  np.testing.assert_array_equal(_forward(block, x), _forward(block, x))


@pytest.mark.parametrize("rng", ["threefry", "hash"])
def test_dropout_rate_scale_and_modes(rng):
  drop = Dropout(0.1, rng=rng, rngs=_rngs())
  x = np.ones((401, 500), np.float32)  # odd element count: the 16-bit draws are sliced
  y = np.asarray(_forward(drop, x))
  assert abs(np.mean(y == 0) - 0.1) < 0.004  # 200,500 draws: 4.5 standard deviations
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.9], rtol=1e-6)
  y2 = np.asarray(_forward(drop, x))
  assert not np.array_equal(y, y2)  # a new mask every call ...
  # ... independent of the last one, and of the neighbouring elements (both 16-bit halves of
  # a word, rows, columns): P(both dropped) = 0.01 within 4.5 standard deviations (0.001).
  d1, d2 = y == 0, y2 == 0
  for a, b in ((d1, d2), (d1[:, :-1], d1[:, 1:]), (d1[:-1], d1[1:])):
    assert abs(np.mean(a & b) - 0.01) < 0.001
  drop.eval()
  np.testing.assert_array_equal(_forward(drop, x), x)


def test_hash_bits_are_uniform_and_key_dependent():
  from fes_jax.models.layers import hash_bits  # pylint: disable=import-outside-toplevel

  a = np.asarray(hash_bits(jax.random.key(0), 1 << 18))
  b = np.asarray(hash_bits(jax.random.key(1), 1 << 18))
  np.testing.assert_array_equal(a, np.asarray(hash_bits(jax.random.key(0), 1 << 18)))
  assert np.mean(a == b) < 1e-4  # another key, another stream
  bits = np.unpackbits(a.view(np.uint8)).reshape(-1, 32)
  assert np.all(np.abs(bits.mean(0) - 0.5) < 0.005)  # every bit fair (sd 0.001)
  counts = np.bincount(a >> 24, minlength=256)  # top byte uniform: chi-square, 255 dof
  chi2 = np.sum((counts - a.size / 256) ** 2 / (a.size / 256))
  assert chi2 < 400  # p ~ 1e-8 for a uniform source
  with pytest.raises(ValueError, match="dropout rng"):
    Dropout(0.1, rng="philox", rngs=_rngs())


@pytest.mark.parametrize("name, cfg", [
    ("simul_st", PAPER), ("seq_st", PAPER), ("simul_ts", PAPER), ("paral_st", PAPER),
    ("paral_st", PAPER.replace(paral_shared=True)),
    ("spot_gcn", PAPER.replace(gcn_data_bn=True)),
])
def test_every_parameter_is_used(name, cfg):
  assert _unused_params(_abstract(name, cfg)) == []


def test_spot_gcn_unused_input_norm_is_the_only_unused_parameter():
  unused = _unused_params(_abstract("spot_gcn"))
  assert len(unused) == 2 and all(p.startswith("['data_norm']") for p in unused)


def test_spot_gcn_functional_train_step_and_eval():
  """The functional jit boundary a trainer uses: split, merge inside grad, return the state."""
  model = build_model("spot_gcn", PAPER, rngs=_rngs())
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = _normal(3, (6, 17, 10, 2))

  @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
  def grad_step(params, rest, x):
    def loss_fn(params):
      # copy=True: train-mode BatchNorm writes its statistics inside the grad trace.
      model = nnx.merge(graphdef, params, rest, copy=True)
      out = model(x)
      loss = jnp.mean(out.logits ** 2) + jnp.mean(out.features ** 2)
      return loss, (out, nnx.state(model, nnx.Not(nnx.Param)))
    return jax.grad(loss_fn, has_aux=True)(params)

  grads, (out, new_rest) = grad_step(params, rest, x)
  assert out.logits.shape == (6, 10) and out.features.shape == (6, 64)
  assert (np.asarray(out.features) >= 0).all()  # ReLU feature
  # Train mode: BatchNorm batch statistics couple a sample to the rest of its batch.
  assert not np.allclose(out.logits[0], grad_step(params, rest, _perturb_others(x))[1][0].logits[0])
  old = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(rest)}
  moved = {jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(new_rest)
           if not np.allclose(old[jax.tree_util.keystr(k)], v)}
  # Running mean and var of the four used BatchNorms, except layer 2's mean: the columns of
  # face2's I - A/2 sum to zero, so its graph op output has zero mean over nodes.
  assert len(moved) == 7 and not any("layers'][1]['norm']['mean" in p for p in moved)
  flat = dict(jax.tree_util.tree_leaves_with_path(grads))
  assert len(flat) == len(jax.tree_util.tree_leaves(params))
  assert all(np.isfinite(np.asarray(g)).all() for g in flat.values())
  nonzero = {jax.tree_util.keystr(k) for k, g in flat.items() if np.abs(np.asarray(g)).sum() > 0}
  assert len(nonzero) == len(flat) - 2  # all but the unused input norm's scale and bias
  # Eval mode: running statistics, no batch coupling, deterministic.
  nnx.update(model, new_rest)
  model.eval()
  eval_out = _forward(model, x)
  assert not np.allclose(out.logits, eval_out.logits)
  np.testing.assert_allclose(_forward(model, _perturb_others(x)).logits[0], eval_out.logits[0],
                             rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- building blocks


def test_attention_axes_and_reference_math():
  cfg = SMALL.replace(dropout=0.0)
  x = _normal(4, (2, 5, 4, cfg.dim))
  for axis in ("graph", "temporal"):
    attn = Attention(cfg, axis, rngs=_rngs())
    attn.eval()  # BN with initial running stats (0, 1): norm(x) = x / sqrt(1 + eps)
    y = np.asarray(_forward(attn, x))
    # Plain numpy multi-head attention over the chosen axis.
    h = np.asarray(x) / np.sqrt(1.0 + cfg.norm_eps)
    qkv = h @ np.asarray(attn.qkv.kernel[...])
    q, k, v = np.split(qkv.reshape(*qkv.shape[:-1], 3, cfg.heads, cfg.dim_head), 3, axis=-3)
    q, k, v = (a[..., 0, :, :] for a in (q, k, v))  # B T V H K
    seq_axis = 2 if axis == "graph" else 1
    q, k, v = (np.moveaxis(a, seq_axis, -3) for a in (q, k, v))  # ... L H K
    s = np.einsum("...lhk,...mhk->...hlm", q, k) / np.sqrt(cfg.dim_head)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.moveaxis(np.einsum("...hlm,...mhk->...lhk", p, v), -3, seq_axis)
    o = o.reshape(*o.shape[:-2], -1) @ np.asarray(attn.out.kernel[...]) + attn.out.bias[...]
    np.testing.assert_allclose(y, np.asarray(x) + o, rtol=1e-4, atol=1e-5)


def test_temporal_conv_matches_loop_and_lengths():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 4, 5)).astype(np.float32)
  lengths = []
  t = 17
  for pad in (0, 0, 1, 1):
    x = rng.normal(size=(2, t, 3, 4)).astype(np.float32)
    y = np.asarray(temporal_conv(jnp.asarray(x), jnp.asarray(kernel), stride=2, padding=pad))
    xp = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
    expected = np.stack([sum(xp[:, 2 * i + j] @ kernel[j] for j in range(3))
                         for i in range(y.shape[1])], axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    t = y.shape[1]
    lengths.append(t)
  assert lengths == [8, 3, 2, 1]


def _linear_grad_program(cls, x, g):
  graphdef, params = nnx.split(cls(32, 24, rngs=nnx.Rngs(0)))

  def loss(params, x):
    y = nnx.merge(graphdef, params)(x)
    return jnp.sum(jnp.where(g > 0, 1.1 * y, 0.0) * g)  # a dropout-like elementwise step

  fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return fn(params, x), fn.lower(params, x).compile().as_text()


def test_linear_flattens_leading_axes_same_values_no_transposed_gradient():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 5, 3, 32)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(8, 5, 3, 24)), jnp.float32)
  ours, theirs = Linear(32, 24, rngs=nnx.Rngs(0)), nnx.Linear(32, 24, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ours(x[0, 0, 0]), theirs(x[0, 0, 0]), rtol=1e-6, atol=1e-6)
  (dp_ours, dx_ours), text_ours = _linear_grad_program(Linear, x, g)
  (dp_theirs, dx_theirs), text_theirs = _linear_grad_program(nnx.Linear, x, g)
  for a, b in zip(jax.tree.leaves(dp_ours) + [dx_ours], jax.tree.leaves(dp_theirs) + [dx_theirs]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # The reason for the class: nnx.Linear's kernel gradient over 3 leading axes makes XLA write
  # the output gradient transposed, (24, 120); flattened, nothing is transposed.
  assert "f32[24,120]" in text_theirs
  assert "f32[24,120]" not in text_ours and " transpose(" not in text_ours


def test_flgp_on_hand_made_input():
  # One frame, 10 nodes, 2 channels: channel 0 = node index, channel 1 = -node index.
  x = np.stack([np.arange(10.0), -np.arange(10.0)], axis=-1)[None, None]  # 1 1 10 2
  level1 = np.asarray(flgp(jnp.asarray(x), FACE_HIERARCHY.pools[0]))
  np.testing.assert_array_equal(level1[0, 0], [[2, 0], [5, -3], [9, -6]])
  level2 = np.asarray(flgp(jnp.asarray(level1), FACE_HIERARCHY.pools[1]))
  np.testing.assert_array_equal(level2[0, 0], [[9, 0]])
  np.testing.assert_array_equal(FACE_HIERARCHY.node_to_group(0), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])


def test_normalized_adjacency_hand_made_graph():
  # Path 0-1-2 plus isolated node 3: degrees 1, 2, 1, 0.
  got = normalized_adjacency(FacialGraph("path", 4, ((0, 1), (2, 1))))
  r = 1.0 / np.sqrt(2.0)
  expected = np.eye(4) - np.array([[0, r, 0, 0], [r, 0, r, 0], [0, r, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_allclose(got, expected)
  np.testing.assert_allclose(normalized_adjacency(FACE2), np.eye(3) - (np.ones((3, 3))
                                                                       - np.eye(3)) / 2)
  np.testing.assert_allclose(normalized_adjacency(FACE3), [[1.0]])
  face1 = normalized_adjacency(FACE1)
  np.testing.assert_allclose(face1, face1.T)
  # Node 0 (degree 3) has neighbours 1, 3, 8 of degrees 2, 3, 4.
  np.testing.assert_allclose(face1[0, [1, 3, 8]], -1 / np.sqrt([3 * 2, 3 * 3, 3 * 4]))
  assert np.count_nonzero(face1 - np.diag(np.diag(face1))) == 2 * len(FACE1.edges)
