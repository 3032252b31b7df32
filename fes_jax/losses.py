"""Spotting losses as pure functions (the reference's section 4, the authors' ``abfcm.py``).

Model output channels (``logits_BxO``, O = 10, one row per window = per frame):
  0-2  ME {onset, offset, none}   (softmax)
  3-5  MaE {onset, offset, none}  (softmax)
  6    ME apex, 7 MaE apex        (sigmoid)
  8    ME expression, 9 MaE expression (sigmoid)
Frame targets are a :class:`SpottingTargets` (a NamedTuple, hence a JAX pytree).

Every loss takes an optional per-sample ``sample_weight_B`` (e.g. the 0/1 ``valid`` mask of
padded windows): the mean over samples becomes ``sum(w l) / sum(w)`` (0 when every weight is
0), and SupCon drops weight-0 samples both as anchors and as candidates. ``None`` (default)
weighs every sample 1, which is the reference's plain mean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

# Output channel layout.
ME_ONOFF = slice(0, 3)
MAE_ONOFF = slice(3, 6)
ME_APEX, MAE_APEX, ME_EXPR, MAE_EXPR = 6, 7, 8, 9
ONSET, OFFSET, NONE = 0, 1, 2  # onset/offset class indices
NEUTRAL, MACRO, MICRO = 0, 1, 2  # contrastive classes


class SpottingTargets(NamedTuple):
  """Per-frame targets, each of shape (B,) (B = windows = frames in the batch).

  Attributes:
    me_onoff: int, ME onset/offset class: 0 onset, 1 offset, 2 none.
    mae_onoff: int, the same for MaE.
    me_apex: float in [0, 1], soft ME apex target (1 at the apex, exp(-j^2/32) near it).
    mae_apex: float, the same for MaE.
    me_expr: float 0/1, 1 on every frame of an ME (onset..offset).
    mae_expr: float 0/1, the same for MaE.
    expr_class: int contrastive class: 0 neutral, 1 MaE, 2 ME.
  """

  me_onoff: jnp.ndarray
  mae_onoff: jnp.ndarray
  me_apex: jnp.ndarray
  mae_apex: jnp.ndarray
  me_expr: jnp.ndarray
  mae_expr: jnp.ndarray
  expr_class: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights and hyper-parameters of :func:`spotting_loss` (defaults: the reference code).

  ``macro_ratio`` is m: 0.5 for CAS(ME)^2 / CAS(ME)^3, 0.55 for SAMM.
  """

  me_apex: float = 1.8
  me_onoff: float = 1.0
  me_expr: float = 0.1
  mae_apex: float = 1.0
  mae_onoff: float = 1.0
  mae_expr: float = 0.1
  macro_ratio: float = 0.5
  supcon: float = 0.005
  apex_alpha: float = 0.9
  apex_gamma: float = 1.0
  expr_alpha: float = 0.8
  expr_gamma: float = 1.0
  label_smoothing: float = 0.16
  focal_eps: float | None = 1e-5
  temperature: float = 0.5
  base_temperature: float = 0.07
  supcon_normalize: bool = False

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "LossWeights":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(values).items() if k in names})


def _weighted_mean(values: jnp.ndarray, sample_weight_B: jnp.ndarray | None) -> jnp.ndarray:
  """Plain mean, or ``sum(w v) / sum(w)`` over the leading (sample) axis (0 if sum(w) = 0).

  Extra trailing axes of ``values`` are averaged too (each sample's weight spreads over them).
  """
  values = jnp.asarray(values, jnp.float32)
  if sample_weight_B is None:
    return jnp.mean(values)
  w = jnp.asarray(sample_weight_B, jnp.float32).reshape(
      (values.shape[0],) + (1,) * (values.ndim - 1))
  w = jnp.broadcast_to(w, values.shape)
  total = jnp.sum(w)
  # Double where: no NaN from 0 * inf (or in gradients) for weight-0 samples.
  safe = jnp.where(w > 0, values, 0.0)
  return jnp.sum(w * safe) / jnp.where(total > 0, total, 1.0)


def binary_focal_loss(logits: jnp.ndarray, targets: jnp.ndarray, *, alpha: float,
                      gamma: float = 1.0, label_smoothing: float = 0.16,
                      eps: float | None = 1e-5,
                      sample_weight_B: jnp.ndarray | None = None) -> jnp.ndarray:
  """The reference's binary focal loss on sigmoid outputs; takes logits.

  ``-mean[a |y-p|^g [y>0] log p + (1-a) |y+s-p|^g [y=0] log(1-p)]`` with p = sigmoid(logits),
  s = label_smoothing, over all elements. The modulating factors are not stop-gradiented (as
  in the reference).

  Args:
    logits: pre-sigmoid outputs, any shape.
    targets: same shape, soft targets in [0, 1]; positives are y > 0.
    alpha: weight of the positive term (0.9 apex, 0.8 expression in the reference).
    gamma: focusing exponent (1 in the reference).
    label_smoothing: s added to the target in the negative term (0.16).
    eps: the reference computes ``log(p + 1e-5)`` and ``log(1 - p + 1e-5)`` (default).
      ``None`` uses the exact ``log_sigmoid(+-logits)`` (numerically stable, no clipping of
      the loss of confidently wrong outputs at log(1e-5)).
    sample_weight_B: optional weight per sample (leading axis); see the module docstring.
  """
  logits = jnp.asarray(logits, jnp.float32)
  y = jnp.asarray(targets, jnp.float32)
  p = jax.nn.sigmoid(logits)
  if eps is None:
    log_p, log_1mp = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  else:
    log_p, log_1mp = jnp.log(p + eps), jnp.log(1.0 - p + eps)
  positive = (y > 0).astype(jnp.float32)
  pos = alpha * jnp.abs(y - p) ** gamma * positive * log_p
  neg = (1.0 - alpha) * jnp.abs(y + label_smoothing - p) ** gamma * (1.0 - positive) * log_1mp
  return -_weighted_mean(pos + neg, sample_weight_B)


def onset_offset_cross_entropy(logits_Bx3: jnp.ndarray, labels_B: jnp.ndarray, *,
                               sample_weight_B: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean softmax cross-entropy (``torch.nn.CrossEntropyLoss``) over onset/offset/none,
  optionally weighted per sample."""
  log_probs = jax.nn.log_softmax(jnp.asarray(logits_Bx3, jnp.float32), axis=-1)
  labels = jnp.asarray(labels_B, jnp.int32)
  nll_B = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return _weighted_mean(nll_B, sample_weight_B)


def supcon_loss(features_BxD: jnp.ndarray, labels_B: jnp.ndarray, *, temperature: float = 0.5,
                base_temperature: float = 0.07, normalize: bool = False,
                eps: float = 1e-6, sample_weight_B: jnp.ndarray | None = None) -> jnp.ndarray:
  """Supervised contrastive loss (Khosla et al.), one view, as the authors' ``SupConLoss``.

  For anchor i: s_ij = z_i.z_j / t, shifted by the row max over all j (self included, no
  gradient through the shift), log_prob_ij = s_ij - log(sum_{k != i} exp(s_ik) + eps), and
  loss_i = -(t / base_t) * sum_{j != i, y_j = y_i} log_prob_ij / (#positives_i + eps).
  Returns the mean of loss_i over all B anchors. An anchor with no positive in the batch gets
  loss_i = 0 (0 / eps) and still counts in the mean, as the reference code implies.

  Args:
    features_BxD: one feature vector per sample.
    labels_B: integer classes (0 neutral, 1 MaE, 2 ME).
    temperature: t (0.5).
    base_temperature: base_t (0.07); the loss is scaled by t / base_t.
    normalize: L2-normalise features first (the paper's formula); the code does not.
    eps: the reference's 1e-6 in the log-denominator and the positive count.
    sample_weight_B: optional weights; a weight-0 sample is no anchor (the mean over anchors
      is weighted) and no candidate (absent from every other anchor's positives, denominator
      and row-max shift).
  """
  z = jnp.asarray(features_BxD, jnp.float32)
  if normalize:
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  b = z.shape[0]
  logits_BxB = (z @ z.T) / temperature
  if sample_weight_B is None:
    keep_BxB = jnp.ones((b, b), bool)
  else:
    keep_B = jnp.asarray(sample_weight_B).reshape(-1) > 0
    keep_BxB = jnp.broadcast_to(keep_B[None, :], (b, b))
    keep_BxB = keep_BxB | jnp.eye(b, dtype=bool)  # a row's own entry for its max shift
  row_max = jnp.max(jnp.where(keep_BxB, logits_BxB, -jnp.inf), axis=1, keepdims=True)
  logits_BxB = logits_BxB - jax.lax.stop_gradient(row_max)
  logits_BxB = jnp.where(keep_BxB, logits_BxB, 0.0)  # no inf / NaN from dropped candidates
  not_self = (keep_BxB & ~jnp.eye(b, dtype=bool)).astype(jnp.float32)
  labels = jnp.asarray(labels_B).reshape(-1)
  positive = (labels[:, None] == labels[None, :]).astype(jnp.float32) * not_self
  denom = jnp.sum(jnp.exp(logits_BxB) * not_self, axis=1, keepdims=True)
  log_prob = logits_BxB - jnp.log(denom + eps)
  mean_log_prob_pos = jnp.sum(positive * log_prob, axis=1) / (jnp.sum(positive, axis=1) + eps)
  return _weighted_mean(-(temperature / base_temperature) * mean_log_prob_pos, sample_weight_B)


def spotting_terms(outputs: tuple[jnp.ndarray, jnp.ndarray], targets: SpottingTargets,
                   weights: LossWeights = LossWeights(),
                   sample_weight_B: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
  """The seven unweighted loss terms, keyed by name.

  Args:
    outputs: ``(logits_BxO, features_BxD)``, e.g. a model's ``ModelOutput``.
    targets: the frame targets.
    weights: loss hyper-parameters (only the focal / SupCon ones are used here).
    sample_weight_B: optional per-sample weights, e.g. the ``valid`` mask (padding = 0).
  """
  logits_BxO, features_BxD = outputs
  focal = dict(label_smoothing=weights.label_smoothing, eps=weights.focal_eps,
               sample_weight_B=sample_weight_B)
  apex = dict(alpha=weights.apex_alpha, gamma=weights.apex_gamma, **focal)
  expr = dict(alpha=weights.expr_alpha, gamma=weights.expr_gamma, **focal)
  return {
      "me_apex": binary_focal_loss(logits_BxO[:, ME_APEX], targets.me_apex, **apex),
      "mae_apex": binary_focal_loss(logits_BxO[:, MAE_APEX], targets.mae_apex, **apex),
      "me_expr": binary_focal_loss(logits_BxO[:, ME_EXPR], targets.me_expr, **expr),
      "mae_expr": binary_focal_loss(logits_BxO[:, MAE_EXPR], targets.mae_expr, **expr),
      "me_onoff": onset_offset_cross_entropy(logits_BxO[:, ME_ONOFF], targets.me_onoff,
                                             sample_weight_B=sample_weight_B),
      "mae_onoff": onset_offset_cross_entropy(logits_BxO[:, MAE_ONOFF], targets.mae_onoff,
                                              sample_weight_B=sample_weight_B),
      "supcon": supcon_loss(features_BxD, targets.expr_class,
                            temperature=weights.temperature,
                            base_temperature=weights.base_temperature,
                            normalize=weights.supcon_normalize,
                            sample_weight_B=sample_weight_B),
  }


def spotting_loss(outputs: tuple[jnp.ndarray, jnp.ndarray], targets: SpottingTargets,
                  weights: LossWeights = LossWeights(),
                  sample_weight_B: jnp.ndarray | None = None
                  ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The reference's weighted sum.

  ``w_me_apex L_me_apex + w_me_onoff L_me_onoff + w_me_expr L_me_expr + m (w_mae_apex
  L_mae_apex + w_mae_onoff L_mae_onoff + w_mae_expr L_mae_expr) + w_supcon L_supcon``
  (1.8, 1.0, 0.1, m = 0.5 or 0.55, 1.0, 1.0, 0.1, 0.005).

  Args:
    outputs: ``(logits_BxO, features_BxD)``, e.g. a model's ``ModelOutput``.
    targets: the frame targets.
    weights: weights and hyper-parameters.
    sample_weight_B: optional per-sample weights, e.g. the ``valid`` mask (padding = 0).

  Returns:
    (total loss, dict of the unweighted terms).
  """
  terms = spotting_terms(outputs, targets, weights, sample_weight_B)
  me = (weights.me_apex * terms["me_apex"] + weights.me_onoff * terms["me_onoff"]
        + weights.me_expr * terms["me_expr"])
  mae = (weights.mae_apex * terms["mae_apex"] + weights.mae_onoff * terms["mae_onoff"]
         + weights.mae_expr * terms["mae_expr"])
  total = me + weights.macro_ratio * mae + weights.supcon * terms["supcon"]
  return total, terms
