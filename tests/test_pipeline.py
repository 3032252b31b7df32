"""The entry point and the resumable stage sequence."""

import json
import subprocess
import sys

import pytest

from fes_jax import config_lib, pipeline, stages
from fes_jax.context import Stage

from conftest import ROOT
import fixtures


def _main(workdir, paths, *extra, config="configs/spotformer_casme2.py"):
  cmd = [sys.executable, "-m", "fes_jax.main", f"--config={ROOT / config}",
         f"--workdir={workdir}",
         f"--config.dataset.annotations={paths['annotations']}",
         f"--config.dataset.frames_root={paths['frames_root']}",
         f"--config.dataset.frame_counts={paths['frame_counts']}", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_parse_arg():
  args = config_lib.parse_arg("preset=tiny,seed=3,fast", preset="default", seed=0, fast=False,
                              lr=0.1)
  assert (args.preset, args.seed, args.fast, args.lr) == ("tiny", 3, True, 0.1)
  with pytest.raises(ValueError, match="unknown config argument 'bogus'"):
    config_lib.parse_arg("bogus=1", preset="x")


def _load(name):
  import importlib.util

  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


def test_training_recipes_and_the_ablation_arg():
  gcn = _load("spot_gcn")
  recipe = lambda c: (c.train.batch_segments, c.train.steps_per_epoch, c.train.learning_rate,
                      c.train.epochs)
  # Synthetic data: the fixed-steps recipe; real datasets: the reference's.
  assert recipe(gcn()) == (8, 20, 1e-3, 100)
  assert recipe(gcn("recipe=reference")) == (32, 0, 2e-4, 100)
  assert recipe(gcn("dataset=casme2")) == (32, 0, 2e-4, 100)
  assert recipe(gcn("dataset=samm_lv,recipe=fixed_steps")) == (8, 20, 1e-3, 100)
  assert recipe(_load("spotformer_casme2")()) == (32, 0, 2e-4, 100)
  assert recipe(_load("spotformer_synthetic")()) == (8, 20, 1e-3, 100)
  assert recipe(gcn("demo")) == (8, 4, 1e-3, 20)
  # `ablation`: the README's ablation data; explicit args win; every fold runs.
  abl = gcn("ablation,temporal=adjacent")
  s = abl.dataset.synthetic
  assert (s.num_subjects, s.videos_per_subject, s.num_frames, s.me_per_minute) == (8, 1, 600,
                                                                                  24.0)
  assert abl.preprocess.temporal == "adjacent" and abl.loso.subjects == ""
  assert recipe(abl) == (8, 20, 1e-3, 100)
  assert gcn("ablation,subjects=5").dataset.synthetic.num_subjects == 5
  with pytest.raises(ValueError, match="different runs"):
    gcn("demo,ablation")
  with pytest.raises(ValueError, match="recipe='fast'"):
    gcn("recipe=fast")
  with pytest.raises(ValueError, match="own shorter recipe"):
    gcn("demo,recipe=reference")


def test_every_config_loads_and_names_all_sections():
  from ml_collections import config_flags  # pylint: disable=unused-import
  import importlib.util

  for path in sorted((ROOT / "configs").glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__ and "python -m fes_jax.main" in module.__doc__, path
    cfg = module.get_config()
    sections = {"spotting": {"dataset", "preprocess", "model", "train", "eval", "loso"},
                "fesnet": {"dataset", "preprocess", "model", "train", "eval", "loso"},
                "mer": {"dataset", "preprocess", "model", "train", "loss", "loso"}}
    assert sections[cfg.get("task", "spotting")] <= set(cfg), path


def _preprocess_flags(paths):
  return ["--config.preprocess.landmarks=file",
          f"--config.preprocess.landmarks_root={paths['landmarks_root']}",
          "--config.preprocess.window=5", "--config.preprocess.workers=1",
          "--stop_after=preprocess"]


def test_main_prepares_preprocesses_and_resumes(tmp_path):
  import numpy as np

  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=24, faces=True)
  workdir = tmp_path / "work"
  run = _main(workdir, paths, *_preprocess_flags(paths))
  assert run.returncode == 0, run.stderr
  summary = json.loads((workdir / "data_summary.json").read_text())
  # 24-frame videos: anger1_2 (frames 50-55) is dropped, two offsets are clipped.
  assert (summary["subjects"], summary["videos"], summary["mae"], summary["me"]) == (2, 3, 1, 2)
  assert summary["quirks"]["beyond_end"] == 3 and summary["quirks"]["dropped"] == 1
  assert summary["folds"] == ["s15", "s16"]
  assert (workdir / "stages/prepare_data.json").exists()
  assert (workdir / "stages/preprocess.json").exists()
  assert not list((workdir / "stages").glob("train*"))
  with np.load(workdir / "features/videos/s15_0401.npz") as f:
    assert f["features"].shape == (24, 5, 10, 2)
    np.testing.assert_array_equal(f["frame_numbers"], np.arange(1, 25))
  index = json.loads((workdir / "features/videos/index.json").read_text())
  assert sorted(index) == ["s15_0401", "s15_0502", "s16_0401"]
  assert list((workdir / "tfrecords").rglob("*.tfrecord-*"))
  assert json.loads((workdir / "config.json").read_text())["dataset"]["name"] == "casme2"

  again = _main(workdir, paths, *_preprocess_flags(paths))
  assert again.returncode == 0
  assert "stage prepare_data: complete, skipped" in again.stderr
  assert "stage preprocess: complete, skipped" in again.stderr

  changed = _main(workdir, paths, *_preprocess_flags(paths),
                  "--config.dataset.policies.missing_offset=drop")
  assert changed.returncode == 2
  assert "differs at dataset.policies.missing_offset" in changed.stderr

  # Choosing a fold is not a config change; a fold that does not exist is an error.
  assert _main(workdir, paths, *_preprocess_flags(paths), "--fold=1").returncode == 0
  bad = _main(workdir, paths, *_preprocess_flags(paths), "--config.loso.fold=5")
  assert bad.returncode != 0 and "fold 5 does not exist" in bad.stderr


def test_preprocess_resumes_per_video(tmp_path):
  """A run killed mid-way keeps the finished videos; the next run computes only the rest."""
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=12, faces=True)
  workdir = tmp_path / "work"
  assert _main(workdir, paths, *_preprocess_flags(paths)).returncode == 0
  videos = workdir / "features/videos"
  stamp = (videos / "s15_0401.npz").stat().st_mtime_ns
  (videos / "s16_0401.json").unlink()  # as if killed before this video finished
  (workdir / "stages/preprocess.json").unlink()
  assert _main(workdir, paths, *_preprocess_flags(paths)).returncode == 0
  assert (videos / "s15_0401.npz").stat().st_mtime_ns == stamp  # not recomputed
  report = json.loads((workdir / "features/report.json").read_text())
  assert report["computed"] == 1 and report["videos"] == 3


def test_locked_config_rejects_unknown_fields(tmp_path):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=5)
  run = _main(tmp_path / "w", paths, "--config.dataset.no_such_field=1")
  assert run.returncode != 0 and "no_such_field" in run.stderr


def test_bad_annotation_file_stops_with_a_clear_error_and_no_marker(tmp_path):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=5)
  rows = fixtures.casme2_rows()
  rows[2] = (1, "happy1_1", 20, 25, 12, 12, "positive", "micro-expression", "happiness")
  fixtures.write_casme2_xlsx(paths["annotations"], rows)
  run = _main(tmp_path / "w", paths)
  assert run.returncode != 0
  assert "row 3, field 'offset': onset 20 is after offset 12" in run.stderr
  assert not (tmp_path / "w/stages/prepare_data.json").exists()


def _fake_stages(log, fail_at=None):
  def make(name):
    def run(ctx):
      log.append(ctx.state["stage"])
      if ctx.state["stage"] == fail_at:
        raise RuntimeError("killed")
      return {"made": ctx.state["stage"]}

    return run

  return (Stage("prepare_data", stages.prepare_data),
          Stage("train", make("train"), per_fold=True),
          Stage("evaluate", make("evaluate")),
          Stage("report", make("report")))


def _config(paths):
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config(
      "casme2", annotations=str(paths["annotations"]), frames_root=str(paths["frames_root"]),
      frame_counts=str(paths["frame_counts"]))
  cfg.loso = config_lib.loso_config()
  return cfg


def test_stage_sequence_folds_and_resume(tmp_path, monkeypatch):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=5)
  log = []
  monkeypatch.setattr(stages, "STAGES", _fake_stages(log, fail_at="train_fold001"))
  work = tmp_path / "w"
  with pytest.raises(RuntimeError, match="killed"):
    pipeline.run(_config(paths), work)
  assert log == ["train_fold000", "train_fold001"]
  assert (work / "stages/train_fold000.json").exists()
  assert not (work / "stages/train_fold001.json").exists()  # nothing half-written

  # One fold alone (a cluster array task) does not run the all-folds stages.
  monkeypatch.setattr(stages, "STAGES", _fake_stages(log))
  log.clear()
  result = pipeline.run(_config(paths), work, fold=1)
  assert log == ["train_fold001"] and result["skipped"] == ["prepare_data"]
  # The full run resumes: every fold is complete, the rest runs.
  log.clear()
  result = pipeline.run(_config(paths), work)
  assert log == ["evaluate", "report"]
  assert result["skipped"] == ["prepare_data", "train_fold000", "train_fold001"]
  with pytest.raises(ValueError, match=r"fold 2 does not exist: this dataset has 2 folds"):
    pipeline.run(_config(paths), work, fold=2)


def test_loso_subject_subset(tmp_path, monkeypatch):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=5)
  log = []
  monkeypatch.setattr(stages, "STAGES", _fake_stages(log))
  cfg = _config(paths)
  cfg.loso.subjects = "s16"
  pipeline.run(cfg, tmp_path / "w")
  assert log == ["train_fold000", "evaluate", "report"]
  cfg.loso.subjects = "s99"
  with pytest.raises(ValueError, match=r"unknown subjects \['s99'\]"):
    pipeline.run(cfg, tmp_path / "w2")


class _TwoProcesses:
  """Process 0 of a two-process run (pipeline._Processes without jax.distributed)."""
  multi, main = True, True

  def __init__(self, config):
    del config

  def barrier(self, name):
    del name


def test_stop_after_and_launch_loso_print(tmp_path, monkeypatch):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=5)
  log = []
  monkeypatch.setattr(stages, "STAGES", _fake_stages(log))
  result = pipeline.run(_config(paths), tmp_path / "w", stop_after="prepare_data")
  assert result["done"] == ["prepare_data"] and log == []
  with pytest.raises(ValueError, match="stop_after='trian' is not a stage"):
    pipeline.run(_config(paths), tmp_path / "w", stop_after="trian")
  # A multi-process run trains folds only: it names the data stage to run first.
  monkeypatch.setattr(pipeline, "_Processes", _TwoProcesses)
  with pytest.raises(ValueError, match=r"not complete.*\(--stop_after=prepare_data\)"):
    pipeline.run(_config(paths), tmp_path / "m")
  out = subprocess.run([sys.executable, str(ROOT / "tools/launch_loso.py"), "--mode=print",
                        "--config=configs/spotformer_casme2.py", f"--workdir={tmp_path / 'w'}",
                        "--", "--config.preprocess.window=5"],
                       capture_output=True, text=True, check=True, cwd=ROOT).stdout
  lines = [l for l in out.splitlines() if not l.startswith("#")]
  assert lines[0].endswith("--config.preprocess.window=5 --stop_after=preprocess")
  assert lines[1].endswith("--fold=$K")
  assert "this workdir has 2 folds" in out
  # Each task's data stages end where its own training starts (FESNet: the crops).
  out = subprocess.run([sys.executable, str(ROOT / "tools/launch_loso.py"), "--mode=print",
                        "--config=configs/fesnet_synthetic.py:tiny", f"--workdir={tmp_path / 'f'}"],
                       capture_output=True, text=True, check=True, cwd=ROOT).stdout
  assert out.splitlines()[1].endswith("--stop_after=crops")


def test_config_check_ignores_run_only_fields(tmp_path):
  """The fold and the preprocessing engine never change results: a workdir made before the
  engine options existed, or with another engine, is accepted; a real change is refused."""
  from fes_jax.context import ConfigMismatch, Context  # pylint: disable=import-outside-toplevel

  cfg = config_lib.ml_collections.ConfigDict(
      {"loso": {"fold": -1, "subjects": ""}, "preprocess": {"window": 17, "engine": "local",
                                                           "beam_runner": "FnApiRunner"}})
  work = tmp_path / "w"
  work.mkdir()
  old = {"loso": {"subjects": ""}, "preprocess": {"window": 17}}  # an older workdir's config
  (work / "config.json").write_text(json.dumps(old))
  pipeline.check_config(Context(cfg, work))
  cfg.preprocess.engine = "beam"
  pipeline.check_config(Context(cfg, work))
  cfg.preprocess.window = 9
  with pytest.raises(ConfigMismatch, match="differs at preprocess.window"):
    pipeline.check_config(Context(cfg, work))


def test_config_check_reads_added_fields_as_their_old_behaviour(tmp_path):
  """A SpotFormer workdir made before ``model.dropout_rng`` existed drew threefry masks: it
  resumes with dropout_rng='threefry' and is refused with 'hash'."""
  from fes_jax.context import ConfigMismatch, Context  # pylint: disable=import-outside-toplevel

  work = tmp_path / "w"
  work.mkdir()
  (work / "config.json").write_text(json.dumps({"model": {"name": "spotformer",
                                                          "dropout": 0.1}}))
  cfg = config_lib.ml_collections.ConfigDict(
      {"model": {"name": "spotformer", "dropout": 0.1, "dropout_rng": "hash"}})
  with pytest.raises(ConfigMismatch, match="differs at model.dropout_rng"):
    pipeline.check_config(Context(cfg, work))
  cfg.model.dropout_rng = "threefry"
  pipeline.check_config(Context(cfg, work))
  # A config without the field (another task's model) is compared as it is.
  (work / "config.json").write_text(json.dumps({"model": {"name": "fesnet"}}))
  pipeline.check_config(Context(config_lib.ml_collections.ConfigDict(
      {"model": {"name": "fesnet"}}), work))
