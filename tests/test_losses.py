"""Losses against hand-computed values and independent numpy formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fes_jax import losses
from fes_jax.losses import (LossWeights, SpottingTargets, binary_focal_loss,
                            onset_offset_cross_entropy, spotting_loss, spotting_terms,
                            supcon_loss)

LN3 = math.log(3.0)


# --------------------------------------------------------------------------- focal loss


def test_focal_loss_hand_computed_exact_log():
  # p = sigmoid(0, ln 3, -ln 3) = 0.5, 0.75, 0.25; alpha 0.9, gamma 1, smoothing 0.16.
  #   y = 1   (positive): 0.9 * |1 - 0.5|   * ln 0.5  = -0.3119162
  #   y = 0   (negative): 0.1 * |0.16-0.75| * ln 0.25 = -0.0817914
  #   y = 0.5 (positive): 0.9 * |0.5-0.25|  * ln 0.25 = -0.3119162
  # loss = -(sum) / 3 = 0.2352079
  got = binary_focal_loss(jnp.array([0.0, LN3, -LN3]), jnp.array([1.0, 0.0, 0.5]), alpha=0.9,
                          gamma=1.0, label_smoothing=0.16, eps=None)
  expected = -(0.9 * 0.5 * math.log(0.5) + 0.1 * 0.59 * math.log(0.25)
               + 0.9 * 0.25 * math.log(0.25)) / 3
  assert expected == pytest.approx(0.2352079, abs=1e-7)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_reference_eps_and_gamma():
  logits = np.array([[0.3, -1.2], [2.5, -0.4], [-3.0, 1.1]], np.float32)
  targets = np.array([[1.0, 0.0], [0.0, 0.6065307], [0.0, 1.0]], np.float32)
  for gamma in (1.0, 2.0):
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    pos = 0.8 * np.abs(targets - p) ** gamma * (targets > 0) * np.log(p + 1e-5)
    neg = 0.2 * np.abs(targets + 0.16 - p) ** gamma * (targets == 0) * np.log(1 - p + 1e-5)
    expected = -np.mean(pos + neg)
    got = binary_focal_loss(logits, targets, alpha=0.8, gamma=gamma)  # eps=1e-5 default
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_focal_loss_eps_clips_confidently_wrong_outputs():
  # A positive with logit -30: the reference's log(p + 1e-5) saturates at ln(1e-5).
  clipped = binary_focal_loss(jnp.array([-30.0]), jnp.array([1.0]), alpha=0.9)
  exact = binary_focal_loss(jnp.array([-30.0]), jnp.array([1.0]), alpha=0.9, eps=None)
  assert float(clipped) == pytest.approx(-0.9 * math.log(1e-5), rel=1e-4)
  assert float(exact) == pytest.approx(0.9 * 30.0, rel=1e-4)
  grad = jax.jit(jax.grad(
      lambda z: binary_focal_loss(z, jnp.array([1.0, 0.0]), alpha=0.9, eps=None)))
  assert np.isfinite(np.asarray(grad(jnp.array([-80.0, 80.0])))).all()


# --------------------------------------------------------------------------- cross-entropy


def test_onset_offset_cross_entropy_hand_computed():
  # Row 1: logits (1, 2, 3), label 2 (none): -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2)
  # Row 2: logits (0, 0, 0), label 0 (onset): log 3.
  logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  expected = (math.log(1 + math.exp(-1) + math.exp(-2)) + LN3) / 2
  assert expected == pytest.approx(0.7531091, abs=1e-7)
  got = onset_offset_cross_entropy(logits, jnp.array([2, 0]))
  assert float(got) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- SupCon


Z3 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
Y3 = np.array([0, 0, 1])


def test_supcon_hand_computed_unnormalised():
  # s = z z^T / 0.5 = [[2,0,2],[0,2,2],[2,2,4]]. Anchor 0: row max 2, shifted (0, -2, 0);
  # denominator over k != 0: e^-2 + e^0; its one positive is sample 1 (shifted logit -2):
  # log_prob = -2 - log(1 + e^-2). Anchor 1 is symmetric. Anchor 2 (label 1) has no positive:
  # 0 / (0 + eps) = 0, still counted in the mean over 3 anchors.
  per_anchor = (0.5 / 0.07) * (2 + math.log(1 + math.exp(-2)))
  expected = 2 * per_anchor / 3
  assert expected == pytest.approx(10.12823, abs=1e-4)
  got = supcon_loss(Z3, Y3, temperature=0.5, base_temperature=0.07)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_supcon_hand_computed_normalised():
  # z_2 -> (1, 1)/sqrt 2: s = [[2,0,r],[0,2,r],[r,r,2]] with r = sqrt 2. Anchor 0: max 2,
  # denominator e^-2 + e^(r-2), positive logit -2: loss_0 = (t/bt)(2 + log(e^-2 + e^(r-2))).
  r = math.sqrt(2.0)
  per_anchor = (0.5 / 0.07) * (2 + math.log(math.exp(-2) + math.exp(r - 2)))
  expected = 2 * per_anchor / 3
  assert expected == pytest.approx(7.77064, abs=1e-4)
  got = supcon_loss(Z3, Y3, temperature=0.5, base_temperature=0.07, normalize=True)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  # Normalising makes the loss invariant to feature scale; the unnormalised loss is not.
  scaled = supcon_loss(3.0 * Z3, Y3, normalize=True)
  assert float(scaled) == pytest.approx(float(got), rel=1e-5)
  assert float(supcon_loss(3.0 * Z3, Y3)) != pytest.approx(float(supcon_loss(Z3, Y3)), rel=1e-3)


def _supcon_numpy(z, y, t, bt, eps=1e-6):
  """Independent loop implementation of the authors' single-view SupConLoss."""
  z = z.astype(np.float64)
  n = len(y)
  total = 0.0
  for i in range(n):
    s = np.array([z[i] @ z[j] / t for j in range(n)])
    s = s - s.max()
    denom = sum(math.exp(s[k]) for k in range(n) if k != i)
    pos = [j for j in range(n) if j != i and y[j] == y[i]]
    mean_lp = sum(s[j] - math.log(denom + eps) for j in pos) / (len(pos) + eps)
    total += -(t / bt) * mean_lp
  return total / n


def test_supcon_matches_loop_implementation():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(9, 5)).astype(np.float32)
  y = np.array([0, 1, 2, 0, 0, 1, 2, 2, 0])
  for t, bt in ((0.5, 0.07), (0.1, 0.1)):
    got = supcon_loss(z, y, temperature=t, base_temperature=bt)
    assert float(got) == pytest.approx(_supcon_numpy(z, y, t, bt), rel=1e-4)
  zn = z / np.linalg.norm(z, axis=1, keepdims=True)
  assert float(supcon_loss(z, y, normalize=True)) == pytest.approx(
      _supcon_numpy(zn, y, 0.5, 0.07), rel=1e-4)


def test_supcon_single_class_batch_and_no_positive_anchor():
  # All anchors without positives: the loss is exactly 0 (0 / eps per anchor).
  assert float(supcon_loss(Z3, np.array([0, 1, 2]))) == 0.0
  grads = jax.jit(jax.grad(lambda z: supcon_loss(z, Y3)))(jnp.asarray(Z3))
  assert np.isfinite(np.asarray(grads)).all()


# --------------------------------------------------------------------------- weighted sum


def _example(batch=6, dim=4, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, 10)).astype(np.float32)
  features = rng.normal(size=(batch, dim)).astype(np.float32)
  targets = SpottingTargets(
      me_onoff=np.array([0, 2, 1, 2, 2, 0]), mae_onoff=np.array([2, 2, 0, 1, 2, 2]),
      me_apex=np.array([1.0, 0.0, 0.9692332, 0.0, 0.0, 0.0], np.float32),
      mae_apex=np.array([0.0, 0.0, 0.0, 1.0, 0.8824969, 0.0], np.float32),
      me_expr=np.array([1, 1, 1, 0, 0, 0], np.float32),
      mae_expr=np.array([0, 0, 1, 1, 1, 0], np.float32),
      expr_class=np.array([2, 2, 1, 1, 1, 0]))
  return logits, features, targets


def _focal_numpy(z, y, a, g=1.0, s=0.16, eps=1e-5):
  p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
  pos = a * np.abs(y - p) ** g * (y > 0) * np.log(p + eps)
  neg = (1 - a) * np.abs(y + s - p) ** g * (y == 0) * np.log(1 - p + eps)
  return -np.mean(pos + neg)


def _ce_numpy(z, labels):
  z = z.astype(np.float64)
  lse = np.log(np.exp(z).sum(axis=1))
  return np.mean(lse - z[np.arange(len(labels)), labels])


@pytest.mark.parametrize("macro_ratio", [0.5, 0.55])
def test_spotting_loss_weighted_sum(macro_ratio):
  logits, features, t = _example()
  weights = LossWeights(macro_ratio=macro_ratio)
  total, terms = spotting_loss((logits, features), t, weights)
  expected_terms = {
      "me_apex": _focal_numpy(logits[:, 6], t.me_apex, 0.9),
      "mae_apex": _focal_numpy(logits[:, 7], t.mae_apex, 0.9),
      "me_expr": _focal_numpy(logits[:, 8], t.me_expr, 0.8),
      "mae_expr": _focal_numpy(logits[:, 9], t.mae_expr, 0.8),
      "me_onoff": _ce_numpy(logits[:, 0:3], t.me_onoff),
      "mae_onoff": _ce_numpy(logits[:, 3:6], t.mae_onoff),
      "supcon": _supcon_numpy(features, t.expr_class, 0.5, 0.07),
  }
  assert set(terms) == set(expected_terms)
  for name, value in expected_terms.items():
    assert float(terms[name]) == pytest.approx(value, rel=1e-4), name
  e = expected_terms
  expected = (1.8 * e["me_apex"] + 1.0 * e["me_onoff"] + 0.1 * e["me_expr"]
              + macro_ratio * (1.0 * e["mae_apex"] + 1.0 * e["mae_onoff"] + 0.1 * e["mae_expr"])
              + 0.005 * e["supcon"])
  assert float(total) == pytest.approx(expected, rel=1e-5)


def test_spotting_loss_weights_are_configurable_and_jittable():
  logits, features, t = _example(seed=1)
  only_supcon = LossWeights(me_apex=0, me_onoff=0, me_expr=0, mae_apex=0, mae_onoff=0,
                            mae_expr=0, supcon=1.0, supcon_normalize=True)
  total, terms = spotting_loss((logits, features), t, only_supcon)
  assert float(total) == pytest.approx(float(terms["supcon"]))
  zn = features / np.linalg.norm(features, axis=1, keepdims=True)
  assert float(total) == pytest.approx(_supcon_numpy(zn, t.expr_class, 0.5, 0.07), rel=1e-4)
  weights = LossWeights.from_mapping({"macro_ratio": 0.55, "unrelated": 3})
  assert weights.macro_ratio == 0.55 and weights.me_apex == 1.8
  loss_and_grads = jax.jit(jax.value_and_grad(lambda o, t: spotting_loss(o, t, weights)[0]))
  value, grads = loss_and_grads((logits, features), t)
  eager = spotting_loss((logits, features), t, weights)[0]
  assert float(value) == pytest.approx(float(eager), rel=1e-6)
  assert all(np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0 for g in grads)


def test_output_channel_layout():
  assert (losses.ME_ONOFF, losses.MAE_ONOFF) == (slice(0, 3), slice(3, 6))
  assert (losses.ME_APEX, losses.MAE_APEX, losses.ME_EXPR, losses.MAE_EXPR) == (6, 7, 8, 9)
  # Each term reads only its own channels: perturbing channel 7 moves only mae_apex.
  logits, features, t = _example(seed=2)
  base = spotting_terms((logits, features), t)
  moved = spotting_terms((logits.copy() + np.eye(10, dtype=np.float32)[7] * 0.7, features), t)
  changed = {k for k in base if float(base[k]) != float(moved[k])}
  assert changed == {"mae_apex"}
