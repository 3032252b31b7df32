"""Fold-parallel training (fes_jax/train/parallel.py): a group of folds trained in one vmapped,
sharded program gives what sequential folds give; the train stage's grouping.

Uses tests/test_train.py's tiny SpotFormer, its fake records and the 8 simulated CPU devices
of tests/conftest.py (the default mesh: batches sharded over all 8).
"""

import json

import jax
import numpy as np
import pytest

from fes_jax import config_lib, pipeline, stages
from fes_jax.context import Stage
from fes_jax.models import ModelConfig
from fes_jax.train import checkpoint, fold, mesh as mesh_lib, metrics, parallel
from fes_jax.train import state as state_lib

import test_train as tt

HELD_OUT = ("a", "b")
_config, _leaves = tt._config, tt._leaves  # pylint: disable=protected-access


pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  return tt._fake_records(tmp_path_factory.mktemp("records"))  # pylint: disable=protected-access


class _Stop(Exception):
  pass


def _restore(directory, like):
  ckpt = checkpoint.FoldCheckpoints(directory)
  try:
    return ckpt.restore(ckpt.latest_epoch(), like)[0]
  finally:
    ckpt.close()


def test_parallel_folds_equal_sequential_folds(records, tmp_path):
  assert jax.device_count() == 8, "tests/conftest.py simulates 8 CPU devices"
  # adam_eps: SpotFormer has parameters whose gradient is 0 in exact arithmetic (biases that
  # add a per-channel constant before a BatchNorm); Adam's default eps turns their round-off
  # noise, which differs between two programs, into steps of +-lr; a larger eps keeps it at
  # noise level (the sharded-step test in test_train.py uses SGD for the same reason).
  cfg = _config(epochs=2, steps_per_epoch=2, adam_eps=1e-3)
  folds = list(range(len(HELD_OUT)))
  seq = [fold.run_fold(cfg, records, h, tmp_path / f"seq/folds/fold_{k:03d}", fold=k)
         for k, h in zip(folds, HELD_OUT)]
  out_dirs = [tmp_path / f"par/folds/fold_{k:03d}" for k in folds]
  # 'oracle' trains as 'last_epoch' and also keeps every epoch's held-out predictions.
  cfg_oracle = _config(epochs=2, steps_per_epoch=2, adam_eps=1e-3, selection="oracle")

  def stop(epoch, records_):
    assert len(records_) == len(folds)
    if epoch == 1:
      raise _Stop()

  with pytest.raises(_Stop):  # killed after epoch 1, then resumed: exact resume
    parallel.run_folds_parallel(cfg_oracle, records, HELD_OUT, out_dirs, folds=folds,
                                on_epoch_end=stop)
  group = tmp_path / "par/folds/group_000_001/checkpoints"
  assert checkpoint.FoldCheckpoints(group).all_epochs() == [1]
  par = parallel.run_folds_parallel(cfg_oracle, records, HELD_OUT, out_dirs, folds=folds)
  assert checkpoint.FoldCheckpoints(group).all_epochs() == [1, 2]

  mesh = mesh_lib.make_mesh()
  _, _, params, rest = state_lib.init_model("spotformer", ModelConfig(**tt.TINY), 0)
  tx, _ = state_lib.make_optimizer(state_lib.OptimizerConfig(), 1, params)
  one = state_lib.init_state(params, rest, tx)
  stacked = _restore(group, mesh_lib.replicate(parallel.stack([one] * len(folds)), mesh))
  like = mesh_lib.replicate(one, mesh)
  for k, (s, p) in enumerate(zip(seq, par)):
    assert set(p) == set(s) | {"fold_parallel", "group"}
    assert p["fold_parallel"] == 2 and p["group"] == folds and p["resumed_from_epoch"] == 1
    assert p["selection"] == "oracle" and p["oracle_predictions"] == "oracle"
    for key in ("fold", "held_out", "train_subjects", "steps_per_epoch", "epochs",
                "selected_epoch", "test_windows", "skipped_steps"):
      assert p[key] == s[key], key
    np.testing.assert_allclose(p["final_loss"], s["final_loss"], rtol=1e-4)
    sequential = _restore(tmp_path / f"seq/folds/fold_{k:03d}/checkpoints", like)
    fold_k = jax.tree.map(lambda x, k=k: x[k], stacked)
    assert int(fold_k.step) == int(sequential.step) == 4
    for a, b in zip(_leaves(sequential.params) + _leaves(sequential.rest),
                    _leaves(fold_k.params) + _leaves(fold_k.rest)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    with np.load(tmp_path / f"seq/folds/fold_{k:03d}/predictions.npz") as a, \
         np.load(out_dirs[k] / "predictions.npz") as b:
      np.testing.assert_array_equal(b["video"], a["video"])
      np.testing.assert_array_equal(b["frame_numbers"], a["frame_numbers"])
      np.testing.assert_allclose(b["probs"], a["probs"], rtol=1e-4, atol=1e-5)
      assert str(b["subject"]) == HELD_OUT[k]
      with np.load(out_dirs[k] / "oracle/epoch_002.npz") as e2:
        np.testing.assert_array_equal(e2["probs"], b["probs"])
    assert (out_dirs[k] / "oracle/epoch_001.npz").exists()
    hist_s = metrics.read_json(tmp_path / f"seq/folds/fold_{k:03d}/metrics.json")
    hist_p = metrics.read_json(out_dirs[k] / "metrics.json")
    assert [e["epoch"] for e in hist_p["epochs"]] == [1, 2]
    assert all("oracle_test_loss" in e for e in hist_p["epochs"])
    np.testing.assert_allclose([e["train_loss"] for e in hist_p["epochs"]],
                               [e["train_loss"] for e in hist_s["epochs"]], rtol=1e-4)
    assert json.loads((out_dirs[k] / "fold.json").read_text()) == p
    assert list((out_dirs[k] / "tensorboard").glob("events.out.tfevents.*"))
  with pytest.raises(ValueError, match="fold_parallel=0"):
    bad = _config(selection="validation")
    parallel.run_folds_parallel(bad, records, HELD_OUT, out_dirs, folds=folds)


def test_fold_groups():
  assert parallel.fold_groups([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
  assert parallel.fold_groups([0, 1, 2], -1) == [[0, 1, 2]]
  assert parallel.fold_groups([3, 5], 0) == [[3], [5]]
  with pytest.raises(ValueError, match="fold_parallel"):
    parallel.fold_groups([0], -2)


def test_train_stage_trains_each_group_once(tmp_path, monkeypatch):
  """The pipeline with fold_parallel=2 over 5 folds: groups [0, 1], [2, 3] in one call each,
  fold 4 alone; every fold's marker; a single-fold run trains its fold alone; a group whose
  outputs exist is not retrained."""
  subjects = ["s1", "s2", "s3", "s4", "s5"]
  calls = []

  def fake_group(config, builder, held_outs, out_dirs, *, folds, checkpoint_dir):
    del config, builder
    calls.append(("group", list(folds)))
    assert checkpoint_dir.parent.name == f"group_{folds[0]:03d}_{folds[-1]:03d}"
    out = []
    for k, h, d in zip(folds, held_outs, out_dirs):
      d.mkdir(parents=True)
      (d / fold.PREDICTIONS).write_bytes(b"")
      record = {"fold": k, "held_out": h, "fold_parallel": len(folds)}
      (d / "fold.json").write_text(json.dumps(record))
      out.append(record)
    return out

  def fake_fold(config, builder, held_out, out_dir, *, fold):
    del config, builder, out_dir
    calls.append(("fold", fold))
    return {"fold": fold, "held_out": held_out}

  monkeypatch.setattr(parallel, "run_folds_parallel", fake_group)
  monkeypatch.setattr(fold, "run_fold", fake_fold)
  monkeypatch.setattr(fold, "open_records", lambda ctx: None)
  monkeypatch.setattr(stages, "fold_subjects", lambda ctx: subjects)
  train = next(s for s in stages.STAGES if s.name == "train")
  monkeypatch.setattr(stages, "STAGES", (Stage("prepare_data", lambda ctx: {}), train))
  cfg = _config(fold_parallel=2)
  cfg.loso = config_lib.loso_config()

  work = tmp_path / "all"
  result = pipeline.run(cfg, work)
  assert calls == [("group", [0, 1]), ("group", [2, 3]), ("fold", 4)]
  assert result["done"] == ["prepare_data"] + [f"train_fold{k:03d}" for k in range(5)]
  for k in range(5):
    record = json.loads((work / f"stages/train_fold{k:03d}.json").read_text())
    assert record["fold"] == k and record["held_out"] == subjects[k]

  calls.clear()  # fold 1's marker lost after its group finished: its record is read back
  (work / "stages/train_fold001.json").unlink()
  assert pipeline.run(cfg, work)["done"] == ["train_fold001"] and calls == []
  assert json.loads((work / "stages/train_fold001.json").read_text())["fold_parallel"] == 2

  pipeline.run(cfg, tmp_path / "one", fold=3)  # --fold=3: a group of one
  assert calls == [("fold", 3)]
