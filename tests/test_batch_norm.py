"""fes_jax.models.batch_norm: the same values, statistics and gradients as nnx.BatchNorm."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from fes_jax.models.batch_norm import BatchNorm


def _pair(dim=6):
  ours = BatchNorm(dim, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
  ref = nnx.BatchNorm(dim, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
  for m in (ours, ref):  # a non-trivial affine map
    m.scale[...] = jnp.linspace(0.5, 2.0, dim)
    m.bias[...] = jnp.linspace(-1.0, 1.0, dim)
  return ours, ref


def _loss(model, x, w):
  return jnp.sum(jnp.tanh(model(x)) * w)


def test_training_values_statistics_and_gradients_match_nnx():
  ours, ref = _pair()
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x = 3.0 * jax.random.normal(k1, (4, 5, 3, 6)) + jnp.arange(6.0)  # channel offsets
  w = jax.random.normal(k2, x.shape)
  np.testing.assert_array_equal(ours(x), ref(x))  # same forward, bit for bit
  np.testing.assert_array_equal(ours.mean[...], ref.mean[...])
  np.testing.assert_array_equal(ours.var[...], ref.var[...])
  for argnums in (0, 1):
    if argnums == 0:
      g = [nnx.jit(nnx.grad(lambda m, x: _loss(m, x, w), argnums=1))(m, x)
           for m in (ours, ref)]
    else:
      g = [jax.tree.leaves(nnx.grad(lambda m: _loss(m, x, w))(m)) for m in (ours, ref)]
    for a, b in zip(jax.tree.leaves(g[0]), jax.tree.leaves(g[1])):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
  # The closed-form input gradient sums to zero per channel (a BatchNorm property).
  gx = nnx.grad(lambda m, x: _loss(m, x, w), argnums=1)(ours, x)
  np.testing.assert_allclose(gx.sum((0, 1, 2)), 0.0, atol=1e-4)


def test_gradient_through_the_batch_statistics():
  """The cotangents of the returned mean / variance reach x (zero in training; checked here
  against autodiff of the same forward)."""
  from fes_jax.models.batch_norm import _stats, batch_norm_train

  x = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
  scale, bias = jnp.array([1.0, 2.0, 0.5, 1.5]), jnp.zeros(4)

  def plain(x, scale, bias):
    mean, var = _stats(x)
    return (x - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias, mean, var

  def total(f):
    return lambda x: sum(jnp.sum(o * (i + 1.0)) for i, o in enumerate(f(x, scale, bias)))

  np.testing.assert_allclose(jax.grad(total(lambda *a: batch_norm_train(*a, 1e-5)))(x),
                             jax.grad(total(plain))(x), rtol=1e-5, atol=1e-5)


def test_eval_mode_and_other_dtypes_are_nnx():
  ours, ref = _pair()
  x = jax.random.normal(jax.random.PRNGKey(2), (8, 6))
  ours(x), ref(x)
  ours.eval(), ref.eval()
  np.testing.assert_array_equal(ours(x), ref(x))
  ours.train(), ref.train()
  xb = x.astype(jnp.bfloat16)
  np.testing.assert_array_equal(ours(xb), ref(xb))
