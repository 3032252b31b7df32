"""LOSO fold jobs on a cluster through submitit (``tools/launch_loso.py --mode=slurm``).

One submission is three steps, each a submitit job running ``fes_jax.main``'s own entry point
(:func:`run_main`: the same flags, the same ``main()``, in the job's process):

1. the data stages once (``--stop_after=`` the last stage before training: preprocess);
2. a job array over the folds (``--fold=K``), depending on (1);
3. the run over all folds (evaluate, aggregate, report; every trained fold is skipped),
   depending on the whole array.

On Slurm the dependencies are Slurm's (``--dependency=afterok:<job>`` with
``--kill-on-invalid-dep=yes``, so that a failed step cancels what waits on it). submitit's
``LocalExecutor`` (``--slurm_executor=local``, for testing on one machine) has no
dependencies: there every job starts at once and first waits, in the job itself, for the
results of the jobs it depends on (:class:`Upstream`), failing when one of them failed or died;
fold jobs also wait for the fold ``array_parallelism`` places before them, which is what
Slurm's ``--array=0-N%P`` does.

Every job is resumable, because ``fes_jax.main`` is: a rerun skips complete stages and folds,
and a fold that was killed resumes from its latest orbax checkpoint. Jobs are
``submitit.helpers.Checkpointable``: a job that reaches its time limit is requeued by submitit
and continues from its checkpoints. The launcher submits only what is not complete yet
(:func:`pending`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, Sequence

import submitit

EXECUTORS = ("slurm", "local")


class UpstreamFailed(RuntimeError):
  """A job this job depends on failed or died (local executor)."""


# --------------------------------------------------------------------------- config and folds


def absolute_config_arg(spec: str) -> str:
  """``configs/x.py:args`` -> ``/abs/configs/x.py:args`` (jobs may start elsewhere)."""
  path, sep, arg = spec.partition(".py:")
  if sep:
    return f"{pathlib.Path(path + '.py').absolute()}:{arg}"
  return str(pathlib.Path(spec).absolute()) if spec.endswith(".py") else spec


def load_config(spec: str, main_flags: Sequence[str] = ()) -> Any:
  """The config ``python -m fes_jax.main --config=SPEC MAIN_FLAGS`` runs with: the config
  file with its ``:args`` and every ``--config.a.b=value`` override in ``main_flags``
  (other flags are ignored). Built on a private flag registry: nothing global is touched."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  argv = ["load_config", f"--config={spec}", *[a for a in main_flags
                                                if a.startswith("--config.")]]
  registry = flags.FlagValues()
  # config_flags finds the overrides in sys_argv (default: sys.argv), not in the parsed argv.
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=registry,
                                  lock_config=True, sys_argv=argv)
  registry(argv)
  return registry.config


def _subset(subjects: Sequence[str], wanted_csv: str) -> list[str]:
  """``stages.fold_subjects``'s rule: the subjects named in ``loso.subjects`` (all if empty)."""
  subjects = sorted(subjects)
  wanted = [s.strip() for s in wanted_csv.split(",") if s.strip()]
  unknown = sorted(set(wanted) - set(subjects))
  if unknown:
    raise ValueError(f"loso.subjects names unknown subjects {unknown}; known: {subjects}")
  return [s for s in subjects if not wanted or s in wanted]


def task_stages(config: Any) -> Any:
  """The module holding the run's stages (``STAGES``, ``fold_subjects``), as the pipeline
  picks it (spotting: ``fes_jax.stages``)."""
  from fes_jax import pipeline, stages  # pylint: disable=import-outside-toplevel

  pick = getattr(pipeline, "task_stages", None)
  return stages if pick is None else pick(config)


@dataclasses.dataclass(frozen=True)
class StagePlan:
  """The run's stages as a submission sees them.

  Attributes:
    data: the stages before training (one job, ``--stop_after=<last of them>``).
    train: the per-fold stage (markers ``<train>_fold<KKK>``).
    final: the last stage (its marker: the run over all folds is complete).
  """

  data: tuple[str, ...]
  train: str
  final: str

  @classmethod
  def of(cls, config: Any) -> "StagePlan":
    names = [(s.name, s.per_fold) for s in task_stages(config).STAGES]
    k = next(i for i, (_, per_fold) in enumerate(names) if per_fold)
    return cls(tuple(n for n, _ in names[:k]), names[k][0], names[-1][0])


def count_folds(config: Any, workdir: str | os.PathLike) -> int:
  """The number of LOSO folds of the run, before its data stages have run if need be.

  From ``<workdir>/data_summary.json`` when the data stage has run; otherwise five for
  FESNet's folds by video; otherwise, for synthetic data not generated yet, from the
  generator's plan (no frames rendered); otherwise
  by reading the annotations the config points at (nothing is written).
  """
  workdir = pathlib.Path(workdir)
  summary = workdir / "data_summary.json"
  if summary.exists():
    return len(json.loads(summary.read_text())["folds"])
  from fes_jax import stages  # pylint: disable=import-outside-toplevel
  from fes_jax.context import Context  # pylint: disable=import-outside-toplevel

  ctx = Context(config, workdir)
  task = task_stages(config)
  if config.get("task", "spotting") == "fesnet" and config.loso.protocol == "kfold5":
    from fes_jax.data import fesnet_records  # pylint: disable=import-outside-toplevel

    return fesnet_records.NUM_FOLDS  # five folds by video, whatever the data
  frames_task = config.get("task", "spotting") in ("spotting", "fesnet")  # long videos
  if frames_task and stages.data_paths(ctx)["root"] is not None:  # synthetic, not made yet
    from fes_jax.synthetic import config as synth_config  # pylint: disable=import-outside-toplevel
    from fes_jax.synthetic import layout, plan  # pylint: disable=import-outside-toplevel

    s = config.dataset.synthetic
    sizes = {k: s[k] for k in ("num_subjects", "videos_per_subject", "num_frames",
                               "me_per_minute") if s.get(k)}
    videos = plan.video_list(synth_config.preset(s.preset, **sizes), s.seed)
    subjects = {layout.subject_folder(v[0]) for v in videos}
    return len(_subset(subjects, config.loso.subjects))
  if config.get("task") == "mer" and config.dataset.name == "synthetic":
    from fes_jax.mer import data as mer_data  # pylint: disable=import-outside-toplevel
    from fes_jax.synthetic import mer_clips  # pylint: disable=import-outside-toplevel

    if not (mer_data.synthetic_root(ctx) / mer_clips.MANIFEST_CSV).exists():  # not made yet
      cfg = mer_data.synth_config(ctx)
      subjects = [mer_clips.subject_name(s) for s in range(1, cfg.num_subjects + 1)]
      return len(_subset(subjects, config.loso.subjects))
  return len(task.fold_subjects(ctx))


@dataclasses.dataclass(frozen=True)
class Pending:
  """What a submission still has to do (from the stage markers of the workdir)."""

  data: bool
  folds: list[int]
  aggregate: bool


def pending(workdir: str | os.PathLike, num_folds: int, plan: StagePlan) -> Pending:
  markers = pathlib.Path(workdir) / "stages"

  def done(name: str) -> bool:
    return (markers / f"{name}.json").exists()

  folds = [k for k in range(num_folds) if not done(f"{plan.train}_fold{k:03d}")]
  return Pending(data=not all(done(n) for n in plan.data), folds=folds,
                 aggregate=bool(folds) or not done(plan.final))


# --------------------------------------------------------------------------- the jobs


def run_main(argv: Sequence[str]) -> dict[str, Any]:
  """``python -m fes_jax.main ARGV`` in this process: its flags, its ``main()``.

  Raises when ``main`` reports an error (exit status != 0), so the job fails and its
  dependents do not run.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel

  from fes_jax import main as fes_main  # pylint: disable=import-outside-toplevel

  argv = ["fes_jax.main", *argv]
  saved, sys.argv = sys.argv, argv  # config_flags reads its overrides from sys.argv
  try:
    # What absl.app.run does before main(), without its sys.exit: parse, INFO logging.
    flags.FLAGS(argv)
    if flags.FLAGS["verbosity"].using_default_value:
      flags.FLAGS.verbosity = 0
    logging.use_absl_handler()
    start = time.time()
    status = fes_main.main(argv[:1])
  finally:
    sys.argv = saved
  if status:
    raise RuntimeError(f"fes_jax.main {' '.join(argv[1:])} exited with status {status}")
  return {"argv": list(argv[1:]), "seconds": round(time.time() - start, 2)}


@dataclasses.dataclass(frozen=True)
class Upstream:
  """A local job to wait for: its result file and its controller's process id."""

  name: str
  result: str
  pid: int
  must_succeed: bool = True  # False: only wait until it has ended (array parallelism)

  @classmethod
  def of(cls, name: str, job: Any, must_succeed: bool = True) -> "Upstream":
    return cls(name, str(job.paths.result_pickle), int(job.job_id), must_succeed)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def wait_for(upstreams: Sequence[Upstream], poll_s: float = 1.0) -> None:
  """Blocks until every upstream job has ended; raises :class:`UpstreamFailed` when one that
  must succeed failed, or died without a result."""
  from submitit.core import utils  # pylint: disable=import-outside-toplevel

  for up in upstreams:
    result = pathlib.Path(up.result)
    gone_since = None
    while not result.exists():
      if not _alive(up.pid):  # the result is written before the job's process ends
        gone_since = gone_since or time.time()
        if time.time() - gone_since > 10 * poll_s:
          if up.must_succeed:
            raise UpstreamFailed(f"{up.name} (job {up.pid}) ended without a result")
          break
      time.sleep(poll_s)
    if result.exists() and up.must_succeed:
      outcome, value = utils.pickle_load(result)
      if outcome != "success":
        raise UpstreamFailed(f"{up.name} (job {up.pid}) failed:\n{value}")


class MainJob(submitit.helpers.Checkpointable):
  """A submitit job: wait for ``after`` (local executor only), then ``fes_jax.main ARGV``.

  Checkpointable: at its time limit submitit requeues it with the same arguments, and the run
  resumes from its stage markers and orbax checkpoints.
  """

  def __init__(self, argv: Sequence[str], after: Sequence[Upstream] = ()):
    self.argv = list(argv)
    self.after = list(after)

  def __call__(self) -> dict[str, Any]:
    wait_for(self.after)
    return run_main(self.argv)


# --------------------------------------------------------------------------- submission


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  """Resources and behaviour of a submission (``tools/launch_loso.py --slurm_*`` flags).

  Attributes:
    log_dir: submitit's folder: pickled jobs, results, one stdout / stderr log per job.
    executor: 'slurm' (sbatch) or 'local' (submitit's LocalExecutor, this machine).
    partition: Slurm partition (None: the cluster's default).
    time_min: time limit of every job, minutes (submitit requeues a job that reaches it).
    cpus_per_task: CPUs of every task (None: the cluster's default).
    gpus_per_task: GPUs of every fold task (the data and aggregate jobs get none).
    mem_gb: memory per node (None: the cluster's default).
    array_parallelism: folds running at once.
    nodes: nodes per fold job; with ``tasks_per_node``, more than one process per fold trains
      it as one multi-process JAX program (``jax.distributed`` finds Slurm's environment).
    tasks_per_node: processes per node of a fold job.
    extra: more sbatch options, ``{"account": "x", "qos": "high"}``, for every job.
  """

  log_dir: str
  executor: str = "slurm"
  partition: str | None = None
  time_min: int = 24 * 60
  cpus_per_task: int | None = None
  gpus_per_task: int = 0
  mem_gb: float | None = None
  array_parallelism: int = 256
  nodes: int = 1
  tasks_per_node: int = 1
  extra: dict[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.executor not in EXECUTORS:
      raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
    if self.array_parallelism < 1:
      raise ValueError("array_parallelism must be >= 1")
    if self.executor == "local" and self.nodes * self.tasks_per_node > 1:
      raise ValueError("the local executor runs one process per fold (nodes and "
                       "tasks_per_node 1); multi-process folds need Slurm")


def _executor(opts: SlurmOptions, name: str, *, fold: bool, dependency: str | None
              ) -> submitit.AutoExecutor:
  ex = submitit.AutoExecutor(folder=opts.log_dir, cluster=opts.executor)
  additional = dict(opts.extra)
  if dependency:
    additional.update({"dependency": dependency, "kill-on-invalid-dep": "yes"})
  params: dict[str, Any] = {"name": name, "timeout_min": int(opts.time_min),
                            "slurm_additional_parameters": additional}
  if opts.partition:
    params["slurm_partition"] = opts.partition
  if opts.cpus_per_task:
    params["cpus_per_task"] = int(opts.cpus_per_task)
  if opts.mem_gb:
    params["mem_gb"] = float(opts.mem_gb)
  if fold:
    params.update(nodes=int(opts.nodes), tasks_per_node=int(opts.tasks_per_node),
                  slurm_array_parallelism=int(opts.array_parallelism))
    if opts.gpus_per_task:
      params.update(slurm_gpus_per_task=int(opts.gpus_per_task),
                    local_gpus_per_node=int(opts.gpus_per_task))
  ex.update_parameters(**params)
  return ex


def _array_id(job: Any) -> str:
  """Slurm array task ``1234_5`` -> the array's job id ``1234`` (afterok on every task)."""
  return str(job.job_id).split("_")[0]


@dataclasses.dataclass
class Submission:
  """The jobs submitted (None / empty where that step was complete already)."""

  data: Any = None
  folds: dict[int, Any] = dataclasses.field(default_factory=dict)
  aggregate: Any = None

  def jobs(self) -> list[tuple[str, Any]]:
    out = [("data stages", self.data)] if self.data is not None else []
    out += [(f"fold {k}", j) for k, j in self.folds.items()]
    if self.aggregate is not None:
      out.append(("evaluate / aggregate / report", self.aggregate))
    return out


def submit(main_argv: Sequence[str], workdir: str | os.PathLike, num_folds: int,
           opts: SlurmOptions, plan: StagePlan) -> Submission:
  """Submits what is not complete yet: data stages, fold array, aggregate (see module doc).

  Args:
    main_argv: the ``fes_jax.main`` flags every job runs with (``--config``, ``--workdir``,
      overrides); the steps add ``--stop_after=preprocess`` and ``--fold=K``.
    workdir: the run's workdir (its stage markers say what is complete).
    num_folds: from :func:`count_folds`.
    opts: executor and resources.
    plan: the run's stages (:meth:`StagePlan.of`).
  """
  todo = pending(workdir, num_folds, plan)
  pathlib.Path(opts.log_dir).mkdir(parents=True, exist_ok=True)
  local = opts.executor == "local"
  out = Submission()
  if not (todo.data or todo.folds or todo.aggregate):
    return out
  if todo.data:
    out.data = _executor(opts, "fes_data", fold=False, dependency=None).submit(
        MainJob([*main_argv, f"--stop_after={plan.data[-1]}"]))
  if todo.folds:
    after_data = [Upstream.of("data stages", out.data)] if (local and out.data) else []
    dependency = f"afterok:{out.data.job_id}" if (out.data and not local) else None
    ex = _executor(opts, "fes_fold", fold=True, dependency=dependency)
    if local:  # one process per fold; fold i starts when fold i - P has ended
      for i, k in enumerate(todo.folds):
        slot = []
        if i >= opts.array_parallelism:
          k_before = todo.folds[i - opts.array_parallelism]
          slot = [Upstream.of(f"fold {k_before}", out.folds[k_before], must_succeed=False)]
        out.folds[k] = ex.submit(MainJob([*main_argv, f"--fold={k}"], after_data + slot))
    else:  # one Slurm job array, --array=0-(n-1)%P
      jobs = ex.submit_array([MainJob([*main_argv, f"--fold={k}"]) for k in todo.folds])
      out.folds = dict(zip(todo.folds, jobs))
  if todo.aggregate:
    before = ([("data stages", out.data)] if out.data is not None and not out.folds else []) + [
        (f"fold {k}", j) for k, j in out.folds.items()]
    after = [Upstream.of(name, j) for name, j in before] if local else []
    dependency = None
    if before and not local:
      ids = sorted({_array_id(j) for _, j in before})
      dependency = "afterok:" + ":".join(ids)
    out.aggregate = _executor(opts, "fes_aggregate", fold=False, dependency=dependency).submit(
        MainJob(list(main_argv), after))
  return out


def wait(submission: Submission, log=print) -> list[str]:
  """Waits for every job; returns the names of those that failed."""
  failed = []
  for name, job in submission.jobs():
    try:
      job.result()
      log(f"{name}: done (job {job.job_id})")
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
      log(f"{name}: FAILED (job {job.job_id}): {first}; log {job.paths.stderr}")
      failed.append(name)
  return failed
