"""Launches the LOSO folds of a run as separate processes or Slurm jobs, or prints commands.

  python tools/launch_loso.py --config=configs/spotformer_synthetic.py --workdir=DIR \
      [--mode=local|print|slurm] [--parallel=2] [--slurm_* flags] [-- extra fes_jax.main flags]

Every mode runs the data stages once first (``--stop_after=`` the last of them: ``preprocess``
and MER, ``crops`` for FESNet), since every fold
needs them and they must not run concurrently, then one ``--fold=K`` run per fold, then the
run over all folds (evaluation, aggregation, report; every trained fold is skipped).

``local`` runs ``python -m fes_jax.main ... --fold=K`` for every fold here, ``--parallel`` at
a time, each logging to ``DIR/logs/fold_KKK.log``. ``print`` prints the three steps as
commands for a scheduler. ``slurm`` submits them through submitit (``fes_jax/cluster.py``):
the data-stage job, a job array over the folds that depends on it (``afterok``), and the
aggregate job that depends on the whole array; it submits only what is not complete yet and
prints the job ids. Jobs log to ``--slurm_log_dir`` (default ``DIR/logs/slurm``).
``--slurm_executor=local`` runs the same jobs through submitit's LocalExecutor on this
machine (no Slurm needed; dependencies are waited for inside the jobs) and waits for them.

Folds are resumable in every mode: rerunning skips what is complete, and a fold that was
killed resumes from its latest orbax checkpoint.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # fes_jax from a checkout

_CONFIG = flags.DEFINE_string("config", None, "Config file (with optional :args).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "print", "slurm"],
                          "Run here, print commands, or submit Slurm jobs.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Folds running at once in local mode.")

_S_EXECUTOR = flags.DEFINE_enum(
    "slurm_executor", "slurm", ["slurm", "local"],
    "slurm: sbatch; local: submitit's LocalExecutor on this machine (testing), which waits.")
_S_PARTITION = flags.DEFINE_string("slurm_partition", None, "Slurm partition (default: the "
                                   "cluster's).")
_S_TIME = flags.DEFINE_integer("slurm_time", 24 * 60, "Time limit of every job, minutes; a "
                               "fold that reaches it is requeued and resumes.")
_S_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", None, "CPUs per task (default: the "
                               "cluster's).")
_S_GPUS = flags.DEFINE_integer("slurm_gpus_per_task", 0, "GPUs per fold task (the data and "
                               "aggregate jobs get none).")
_S_MEM = flags.DEFINE_float("slurm_mem_gb", None, "Memory per node, GB (default: the "
                            "cluster's).")
_S_ARRAY = flags.DEFINE_integer("slurm_array_parallelism", 256, "Folds running at once.")
_S_NODES = flags.DEFINE_integer("slurm_nodes", 1, "Nodes per fold job (multi-process JAX "
                                "training of one fold when nodes x tasks_per_node > 1).")
_S_TASKS = flags.DEFINE_integer("slurm_tasks_per_node", 1, "Processes per node of a fold "
                                "job (one per host is usual: a process sees its host's GPUs).")
_S_LOGS = flags.DEFINE_string("slurm_log_dir", None, "submitit's folder: job logs, pickles "
                              "and results (default <workdir>/logs/slurm).")
_S_EXTRA = flags.DEFINE_multi_string("slurm_extra", [], "More sbatch options, KEY=VALUE "
                                     "(repeatable), e.g. --slurm_extra=account=proj "
                                     "--slurm_extra=qos=high.")
_S_WAIT = flags.DEFINE_bool("slurm_wait", False, "Wait for the Slurm jobs and report how "
                            "they ended (the local executor always waits).")


def _base(extra: list[str]) -> list[str]:
  return [sys.executable, "-m", "fes_jax.main", f"--config={_CONFIG.value}",
          f"--workdir={_WORKDIR.value}", *extra]


def _folds(workdir: pathlib.Path) -> list[str]:
  return json.loads((workdir / "data_summary.json").read_text())["folds"]


def _extra_sbatch() -> dict[str, str]:
  out = {}
  for item in _S_EXTRA.value:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise app.UsageError(f"--slurm_extra wants KEY=VALUE, got {item!r}")
    out[key.strip().lstrip("-")] = value
  return out


def _slurm(extra: list[str]) -> int:
  from fes_jax import cluster  # pylint: disable=import-outside-toplevel

  chosen = [a for a in extra if a.split("=")[0] in ("--fold", "--stop_after")]
  if chosen:
    raise app.UsageError(f"{chosen}: the launcher chooses the folds and stages of each job")
  workdir = pathlib.Path(_WORKDIR.value).absolute()
  config_arg = cluster.absolute_config_arg(_CONFIG.value)
  main_argv = [f"--config={config_arg}", f"--workdir={workdir}", *extra]
  config = cluster.load_config(config_arg, extra)
  num_folds = cluster.count_folds(config, workdir)
  opts = cluster.SlurmOptions(
      log_dir=str(pathlib.Path(_S_LOGS.value or workdir / "logs" / "slurm").absolute()),
      executor=_S_EXECUTOR.value, partition=_S_PARTITION.value, time_min=_S_TIME.value,
      cpus_per_task=_S_CPUS.value, gpus_per_task=_S_GPUS.value, mem_gb=_S_MEM.value,
      array_parallelism=_S_ARRAY.value, nodes=_S_NODES.value, tasks_per_node=_S_TASKS.value,
      extra=_extra_sbatch())
  sub = cluster.submit(main_argv, workdir, num_folds, opts, cluster.StagePlan.of(config))
  if not sub.jobs():
    print(f"{workdir}: every stage of the {num_folds} folds is complete; nothing submitted")
    return 0
  print(f"{num_folds} folds; submitted ({opts.executor}), logs in {opts.log_dir}:")
  for name, job in sub.jobs():
    print(f"  {name}: job {job.job_id}")
  if opts.executor == "local" or _S_WAIT.value:
    failed = cluster.wait(sub)
    if failed:
      print(f"failed: {', '.join(failed)}; rerun the same command to resume", file=sys.stderr)
      return 1
    print(f"done: {workdir / 'results'}")
  return 0


def main(argv):
  extra = argv[1:]
  workdir = pathlib.Path(_WORKDIR.value)
  if _MODE.value == "slurm":
    return _slurm(extra)
  from fes_jax import cluster  # pylint: disable=import-outside-toplevel

  config = cluster.load_config(cluster.absolute_config_arg(_CONFIG.value), extra)
  data_cmd = _base(extra) + [f"--stop_after={cluster.StagePlan.of(config).data[-1]}"]
  if _MODE.value == "print":
    print("# 1. data stages, once:")
    print(shlex.join(data_cmd))
    print("# 2. one job per fold, K = 0 .. (number of folds - 1), e.g. a job array:")
    print(shlex.join(_base(extra)) + " --fold=$K")
    print("# 3. evaluation, aggregation and report over all folds:")
    print(shlex.join(_base(extra)))
    if (workdir / "data_summary.json").exists():
      print(f"# this workdir has {len(_folds(workdir))} folds")
    return 0
  subprocess.run(data_cmd, check=True)
  folds = _folds(workdir)
  logs = workdir / "logs"
  logs.mkdir(exist_ok=True)
  pending = list(range(len(folds)))
  running: dict[int, tuple[subprocess.Popen, object]] = {}
  failed = []
  while pending or running:
    while pending and len(running) < max(1, _PARALLEL.value):
      k = pending.pop(0)
      log = open(logs / f"fold_{k:03d}.log", "w")
      running[k] = (subprocess.Popen(_base(extra) + [f"--fold={k}"], stdout=log,
                                     stderr=subprocess.STDOUT), log)
      print(f"fold {k} ({folds[k]}): started, log {log.name}", flush=True)
    time.sleep(1)
    for k, (proc, log) in list(running.items()):
      if proc.poll() is not None:
        log.close()
        del running[k]
        status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"fold {k} ({folds[k]}): {status}", flush=True)
        if proc.returncode != 0:
          failed.append(k)
  if failed:
    print(f"folds {failed} failed; see {logs}; rerun to resume", file=sys.stderr)
    return 1
  return subprocess.run(_base(extra)).returncode


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
