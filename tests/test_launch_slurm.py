"""tools/launch_loso.py --mode=slurm: fold jobs through submitit (fes_jax/cluster.py).

The whole job runs through submitit's LocalExecutor (``--slurm_executor=local``) on a tiny run
(the CAS(ME)^2-layout fixture: 2 subjects, 3 videos of 24 frames with ground-truth landmarks;
SpoT-GCN, which compiles in a third of the tiny SpotFormer's time, 2 epochs of 2 steps of 8
segments on the 8 simulated devices): data-stage job, one job per fold, aggregate job,
each a separate process running fes_jax.main's entry point. Its outputs equal those of a
plain sequential run in this process; a fold killed mid-way resumes from its checkpoint in the
next submission, which submits only that fold and the aggregate. The real Slurm path is
checked without a cluster: fake ``sbatch`` / ``srun`` on PATH record the submitted scripts,
whose ``#SBATCH`` lines (array, afterok dependencies, resources) are asserted.

Every process uses one persistent compilation cache (the sequential run fills it first), so
the fold jobs do not compile again.
"""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fes_jax import cluster

from conftest import ROOT
import fixtures

CONFIG = str(ROOT / "configs/spot_gcn.py") + ":dataset=casme2"
LAUNCHER = str(ROOT / "tools/launch_loso.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return fixtures.write_casme2_dataset(tmp_path_factory.mktemp("data"), num_frames=24,
                                       faces=True)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
  """One persistent compilation cache for this process and every job it starts."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=import-outside-toplevel

  cache = str(tmp_path_factory.mktemp("jax_cache"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  cc.reset_cache()
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  yield env
  jax.config.update("jax_compilation_cache_dir", None)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  cc.reset_cache()


def _launch(workdir, paths, env, *flags):
  cmd = [sys.executable, LAUNCHER, "--mode=slurm", f"--config={CONFIG}", f"--workdir={workdir}",
         *flags, "--", *fixtures.main_flags(paths)]
  run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  logs = pathlib.Path(workdir) / "logs/slurm"
  if run.returncode != 0 and logs.is_dir():  # show the jobs' errors
    for err in sorted(logs.glob("*_log.err")):
      print(f"==== {err.name}\n{err.read_text()[-3000:]}")
  return run


def _submitted(stdout: str) -> list[str]:
  return [line.split(":")[0].strip() for line in stdout.splitlines()
          if line.startswith("  ") and ": job " in line]


def _predictions(path):
  with np.load(path) as p:
    return {k: p[k] for k in ("probs", "video", "frame_numbers")}


def _assert_same_results(a: pathlib.Path, b: pathlib.Path, folds: int):
  """Two workdirs hold the same fold predictions and the same final scores."""
  for k in range(folds):
    pa, pb = (_predictions(w / f"folds/fold_{k:03d}/predictions.npz") for w in (a, b))
    for key in pa:
      np.testing.assert_array_equal(pa[key], pb[key], err_msg=f"fold {k} {key}")
  ma, mb = (json.loads((w / "results/metrics.json").read_text()) for w in (a, b))
  assert ma["scores"] == mb["scores"] and ma["ground_truth"] == mb["ground_truth"]
  rows = [list(csv.reader(open(w / "results/submission.csv"))) for w in (a, b)]
  assert rows[0] == rows[1]


def test_local_executor_runs_every_fold_equals_sequential_and_resumes(data, cache_env,
                                                                     tmp_path):
  from fes_jax import pipeline  # pylint: disable=import-outside-toplevel

  # The plain sequential run (the same library entry point, this process, 8 devices).
  seq = tmp_path / "sequential"
  config = cluster.load_config(CONFIG, fixtures.main_flags(data))
  assert config.train.epochs == 2 and config.model.name == "spot_gcn"  # flags were read
  result = pipeline.run(config, seq)
  assert result["done"][-1] == "report"

  # The same run as submitit jobs (one process each, the same 8 simulated devices).
  work = tmp_path / "slurm"
  run = _launch(work, data, cache_env, "--slurm_executor=local", "--slurm_time=10")
  assert run.returncode == 0, run.stderr[-3000:]
  assert _submitted(run.stdout) == ["data stages", "fold 0", "fold 1",
                                    "evaluate / aggregate / report"]
  assert "2 folds; submitted (local)" in run.stdout
  for k in (0, 1):
    d = work / f"folds/fold_{k:03d}"
    for name in ("predictions.npz", "fold.json", "metrics.json", "eval.json",
                 "intervals.csv"):
      assert (d / name).is_file(), d / name
    assert sorted(p.name for p in (d / "checkpoints").iterdir() if p.name.isdigit()) == [
        "1", "2"]
    record = json.loads((work / f"stages/train_fold{k:03d}.json").read_text())
    assert record["epochs"] == 2 and record["resumed_from_epoch"] is None
  for name in ("report.md", "metrics.json", "submission.csv"):
    assert (work / "results" / name).is_file()
  logs = work / "logs/slurm"
  assert len(list(logs.glob("*_log.out"))) == 4 and len(list(logs.glob("*_result.pkl"))) == 4
  assert "already complete ['prepare_data', 'preprocess', 'train_fold000', 'train_fold001']" \
      in "".join(p.read_text() for p in logs.glob("*_log.out"))  # the aggregate job
  _assert_same_results(seq, work, 2)

  # Fold 1 killed during its second epoch: its epoch-2 checkpoint, outputs and marker are
  # missing, and the aggregate never ran (it depends on every fold).
  fold0 = (work / "folds/fold_000/predictions.npz").stat().st_mtime_ns
  shutil.rmtree(work / "folds/fold_001/checkpoints/2")
  for name in ("predictions.npz", "fold.json", "eval.json", "intervals.csv"):
    (work / "folds/fold_001" / name).unlink()
  for name in ("train_fold001", "evaluate", "aggregate", "report"):
    (work / f"stages/{name}.json").unlink()
  shutil.rmtree(work / "results")
  run = _launch(work, data, cache_env, "--slurm_executor=local", "--slurm_time=10")
  assert run.returncode == 0, run.stderr[-3000:]
  assert _submitted(run.stdout) == ["fold 1", "evaluate / aggregate / report"]
  record = json.loads((work / "stages/train_fold001.json").read_text())
  assert record["resumed_from_epoch"] == 1 and record["epochs"] == 2
  assert (work / "folds/fold_000/predictions.npz").stat().st_mtime_ns == fold0  # not rerun
  _assert_same_results(seq, work, 2)

  # Everything complete: nothing is submitted.
  run = _launch(work, data, cache_env, "--slurm_executor=local")
  assert run.returncode == 0 and "nothing submitted" in run.stdout


def test_local_executor_a_failed_step_fails_what_depends_on_it(data, tmp_path):
  """afterok with the local executor: the data job fails (no landmark files), so each fold job
  and the aggregate job fail before running anything, naming the step they waited for."""
  work = tmp_path / "w"
  cmd = [sys.executable, LAUNCHER, "--mode=slurm", "--slurm_executor=local",
         f"--config={CONFIG}", f"--workdir={work}", "--slurm_array_parallelism=1", "--",
         *fixtures.main_flags(data),
         f"--config.preprocess.landmarks_root={tmp_path / 'none'}"]
  run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert run.returncode == 1
  for name in ("data stages", "fold 0", "fold 1", "evaluate / aggregate / report"):
    assert f"{name}: FAILED" in run.stdout, run.stdout
  assert "rerun the same command to resume" in run.stderr
  errors = {p.name: p.read_text() for p in (work / "logs/slurm").glob("*_log.err")}
  waited = sorted(e.split("UpstreamFailed: ")[1].split(" (job")[0] for e in errors.values()
                  if "UpstreamFailed: " in e)  # the first upstream named in each log
  assert waited == ["data stages", "data stages", "fold 0"]  # the folds, the aggregate
  assert not (work / "folds").exists() and (work / "stages/prepare_data.json").exists()


_FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 1000) + 1 ))
echo $n > "$FAKE_SLURM/counter"
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"
echo "Submitted batch job $n"
"""


def _sbatch_lines(path: pathlib.Path) -> dict[str, str]:
  out = {}
  for line in path.read_text().splitlines():
    if line.startswith("#SBATCH --"):
      key, _, value = line[len("#SBATCH --"):].partition("=")
      out[key] = value
  return out


def test_slurm_submission_uses_an_array_and_afterok_dependencies(data, tmp_path):
  """The real Slurm path, with sbatch / srun faked: three sbatch scripts, the array depending
  on the data job, the aggregate on the whole array; resources where they belong. The fold
  count comes from the annotations (the workdir has no data yet)."""
  fake = tmp_path / "fake_slurm"
  fake.mkdir()
  for name, text in (("sbatch", _FAKE_SBATCH), ("srun", "#!/bin/bash\nexit 0\n")):
    (fake / name).write_text(text)
    (fake / name).chmod(0o755)
  env = dict(os.environ, FAKE_SLURM=str(fake), PATH=f"{fake}:{os.environ['PATH']}")
  work = tmp_path / "w"
  run = _launch(work, data, env, "--slurm_partition=gpu", "--slurm_time=30",
                "--slurm_cpus_per_task=3", "--slurm_gpus_per_task=1", "--slurm_mem_gb=5",
                "--slurm_array_parallelism=1", "--slurm_extra=account=proj",
                "--slurm_extra=qos=high")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "2 folds; submitted (slurm)" in run.stdout
  assert "data stages: job 1001" in run.stdout and "fold 1: job 1002_1" in run.stdout
  assert "evaluate / aggregate / report: job 1003" in run.stdout
  data_job, array, agg = (_sbatch_lines(fake / f"sbatch_{n}.sh") for n in (1001, 1002, 1003))
  for job in (data_job, array, agg):
    assert job["partition"] == "gpu" and job["time"] == "30" and job["cpus-per-task"] == "3"
    assert job["mem"] == "5GB" and job["account"] == "proj" and job["qos"] == "high"
    assert job["output"].startswith(str(work / "logs/slurm"))
  assert "dependency" not in data_job and "array" not in data_job
  assert "gpus-per-task" not in data_job and "gpus-per-task" not in agg
  assert array["array"] == "0-1%1" and array["gpus-per-task"] == "1"
  assert array["dependency"] == "afterok:1001" and array["kill-on-invalid-dep"] == "yes"
  assert agg["dependency"] == "afterok:1002" and "array" not in agg
  assert array["job-name"] == "fes_fold" and agg["job-name"] == "fes_aggregate"
  # The pickled array tasks run fes_jax.main with --fold=K and the run's flags.
  from submitit.core import utils  # pylint: disable=import-outside-toplevel

  for k in (0, 1):
    job = utils.DelayedSubmission.load(work / f"logs/slurm/1002_{k}_submitted.pkl").function
    assert isinstance(job, cluster.MainJob) and job.after == []
    assert job.argv[-1] == f"--fold={k}" and job.argv[0] == f"--config={CONFIG}"
    assert job.argv[1] == f"--workdir={work}"
    assert job.argv[2:-1] == fixtures.main_flags(data)
  agg_job = utils.DelayedSubmission.load(work / "logs/slurm/1003_submitted.pkl").function
  assert agg_job.argv == [f"--config={CONFIG}", f"--workdir={work}",
                          *fixtures.main_flags(data)]


def test_fold_count_before_the_data_exists(tmp_path):
  """Synthetic data is counted from the generator's plan, without generating it."""
  demo = cluster.load_config(str(ROOT / "configs/spotformer_synthetic.py:demo"))
  assert cluster.count_folds(demo, tmp_path) == 4
  two = cluster.load_config(str(ROOT / "configs/spotformer_synthetic.py:demo,folds=s15+s16"))
  assert cluster.count_folds(two, tmp_path) == 2
  assert not any(tmp_path.iterdir())  # nothing written
  plan = cluster.StagePlan.of(demo)
  assert (plan.data, plan.train, plan.final) == (("prepare_data", "preprocess"), "train",
                                                 "report")
  # FESNet: five folds by video (whatever the data), or LOSO from the generator's plan; MER:
  # from its clip generator's plan. Each task's data stages end where its training starts.
  fesnet = cluster.load_config(str(ROOT / "configs/fesnet_synthetic.py:demo"))
  assert cluster.count_folds(fesnet, tmp_path) == 5
  fesnet_loso = cluster.load_config(str(ROOT / "configs/fesnet_synthetic.py:demo,subjects=4"),
                                    ["--config.loso.protocol=loso"])
  assert cluster.count_folds(fesnet_loso, tmp_path) == 4
  assert cluster.StagePlan.of(fesnet).data == ("prepare_data", "crops")
  mol = cluster.load_config(str(ROOT / "configs/mol_synthetic.py:demo,subjects=3"))
  assert cluster.count_folds(mol, tmp_path) == 3
  assert cluster.StagePlan.of(mol).data == ("prepare_data", "preprocess")
  assert not any(tmp_path.iterdir())  # still nothing written
  with pytest.raises(ValueError, match="multi-process folds need Slurm"):
    cluster.SlurmOptions(log_dir=str(tmp_path), executor="local", nodes=2)
