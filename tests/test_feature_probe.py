"""The feature-level probe (fes_jax/eval/feature_probe.py): AUC, labels, LOSO probe."""

import numpy as np
import pytest

from fes_jax.data.types import Dataset, ExprType, Interval, Video
from fes_jax.eval import feature_probe


def test_auc_matches_hand_counts():
  # positives 0.9, 0.4; negatives 0.1, 0.5, 0.8: pairs won 3 + 1 of 6.
  scores = np.array([0.9, 0.1, 0.4, 0.5, 0.8])
  assert feature_probe.auc(scores, np.array([1, 0, 1, 0, 0])) == pytest.approx(4 / 6)
  assert np.isnan(feature_probe.auc(scores, np.ones(5)))


def _dataset(num_subjects=4, frames=200):
  ds = Dataset(name="Fake", fps=30.0)
  for i in range(num_subjects):
    ivs = [Interval(onset=30, apex=36, offset=42, type=ExprType.ME),
           Interval(onset=100, apex=110, offset=130, type=ExprType.MAE),
           Interval(onset=160, apex=165, offset=171, type=ExprType.ME)]
    ds.add_video(Video(f"s{i}", f"s{i}_v", 30.0, num_frames=frames, intervals=ivs))
  ds.sort()
  return ds


def test_window_labels():
  (subject, labels), = list(feature_probe.window_labels(_dataset(1), apex_radius=2,
                                                        margin=10).values())
  assert subject == "s0"
  assert (labels[33:38] == 1).all() and (labels[107:112] == 2).all()  # apex 36 is index 35
  assert labels[38] == -1 and labels[19] == -1 and labels[18] == 0 and labels[52] == 0


def test_probe_finds_planted_signal_and_not_noise():
  ds = _dataset()
  labels = feature_probe.window_labels(ds)
  rng = np.random.default_rng(0)
  noise = {v: rng.standard_normal((200, 5, 3, 2)) for v in labels}
  planted = {v: x.copy() for v, x in noise.items()}
  for v, (_, lab) in labels.items():
    planted[v][lab == 1, 2, 0, 0] += 3.0  # ME apex windows move one node
  found = feature_probe.probe(planted, labels)
  chance = feature_probe.probe(noise, labels)
  assert found["me"]["auc"] > 0.95 and found["me"]["positives"] == 4 * 10
  assert abs(chance["me"]["auc"] - 0.5) < 0.2 and abs(chance["mae"]["auc"] - 0.5) < 0.25
