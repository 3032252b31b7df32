"""BatchNorm with a hand-written backward pass (same values as ``nnx.BatchNorm``).

Training-mode BatchNorm over channels-last tokens: statistics per channel over every other
axis, the fast variance ``E[x^2] - E[x]^2`` clipped at 0, ``y = (x - mean) * (rsqrt(var + eps)
* scale) + bias``, running statistics updated as ``nnx.BatchNorm`` does. Autodiff of that
forward builds its gradient from the chain of mean, variance and rsqrt; the gradient here is
the closed form (n tokens, ``xhat = (x - mean) * rstd``)::

  dbias = sum(dy),  dscale = sum(dy * xhat)
  dx = scale * rstd * (dy - dbias / n - xhat * dscale / n)
       + (dmean + 2 * (x - mean) * dvar) / n

(the last line: the cotangents of the returned batch statistics, zero in training since only
the running averages read them), two reductions and one elementwise pass over the activations.
Parameters and state are ``nnx.BatchNorm``'s (``scale``, ``bias``, ``mean``, ``var``), so
checkpoints do not change; anything outside the float32 channels-last training case (running
averages, masks, other axes, other dtypes) is ``nnx.BatchNorm`` itself.
"""

from __future__ import annotations

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp


def _stats(x_NxC: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  axes = tuple(range(x_NxC.ndim - 1))
  mean_C = x_NxC.mean(axes)
  var_C = jnp.maximum(0.0, (x_NxC * x_NxC).mean(axes) - mean_C * mean_C)
  return mean_C, var_C


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x_NxC: jnp.ndarray, scale_C: jnp.ndarray, bias_C: jnp.ndarray,
                     eps: float) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """``(y, batch mean, batch variance)`` with statistics over every axis but the last."""
  return _fwd(x_NxC, scale_C, bias_C, eps)[0]


def _fwd(x_NxC, scale_C, bias_C, eps):
  mean_C, var_C = _stats(x_NxC)
  rstd_C = jax.lax.rsqrt(var_C + eps)
  y = (x_NxC - mean_C) * (rstd_C * scale_C) + bias_C
  return (y, mean_C, var_C), (x_NxC, scale_C, mean_C, rstd_C)


def _bwd(eps, residuals, cotangents):
  del eps
  x_NxC, scale_C, mean_C, rstd_C = residuals
  dy, dmean_C, dvar_C = cotangents
  axes = tuple(range(x_NxC.ndim - 1))
  n = math.prod(x_NxC.shape[:-1])
  centred = x_NxC - mean_C
  xhat = centred * rstd_C
  dbias_C = dy.sum(axes)
  dscale_C = (dy * xhat).sum(axes)
  dx = ((scale_C * rstd_C) * (dy - dbias_C / n - xhat * (dscale_C / n))
        + (dmean_C + 2.0 * centred * dvar_C) / n)
  return dx, dscale_C, dbias_C


batch_norm_train.defvjp(_fwd, _bwd)


class BatchNorm(nnx.BatchNorm):
  """``nnx.BatchNorm`` whose float32 training step uses :func:`batch_norm_train`."""

  def __call__(self, x, use_running_average=None, *, mask=None):
    use_running = (use_running_average if use_running_average is not None
                   else self.use_running_average)
    fast = (not use_running and mask is None and self.axis in (-1, x.ndim - 1)
            and self.axis_name is None and self.dtype is None and self.use_fast_variance
            and self.scale is not None and self.bias is not None
            and x.dtype == jnp.float32 and self.scale[...].dtype == jnp.float32
            and self.bias[...].dtype == jnp.float32)
    if not fast:
      return super().__call__(x, use_running_average, mask=mask)
    y, mean_C, var_C = batch_norm_train(x, self.scale[...], self.bias[...], self.epsilon)
    stop = jax.lax.stop_gradient
    self.mean[...] = stop(self.momentum * self.mean[...] + (1 - self.momentum) * mean_C)
    self.var[...] = stop(self.momentum * self.var[...] + (1 - self.momentum) * var_C)
    return y
