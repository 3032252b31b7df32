"""The run as a sequence of resumable stages.

Spotting (``config.task`` 'spotting', the default; fes_jax/stages.py): prepare_data ->
preprocess -> train (one per LOSO fold) -> evaluate -> aggregate -> report. Other tasks
('fesnet': fes_jax/fesnet/stages.py, 'mer': fes_jax/mer/stages.py) give their own stage lists
through the same interface: ``STAGES``, ``AFTER_TRAINING`` and ``fold_subjects(ctx)`` (the
fold names, one per fold).

A stage that finishes writes ``<workdir>/stages/<name>.json`` last (atomically); a stage whose
marker exists is skipped, so rerunning the same command resumes. A stage that later issues
implement raises :class:`StageNotImplemented` when reached: the run stops there, says so, and
writes nothing for it.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import time
from typing import Any

from absl import logging
import ml_collections

from fes_jax import cluster, stages
from fes_jax.context import ConfigMismatch, Context, StageNotImplemented, write_json_atomic

__all__ = ["run", "ConfigMismatch", "StageNotImplemented"]


def marker(ctx: Context, name: str) -> pathlib.Path:
  return ctx.path("stages", f"{name}.json")


def check_config(ctx: Context) -> None:
  """Stores the config in the workdir on first use; refuses a different one later.

  Fields that only choose what part of the job to run (``loso.fold``) or how it runs
  without changing any output (``RUN_ONLY_FIELDS``: the preprocessing engine) may differ; a
  field added since the workdir was made reads as its old behaviour (``ADDED_FIELDS``).
  """
  cfg = json.loads(ctx.config.to_json_best_effort(sort_keys=True))
  cfg.get("loso", {}).pop("fold", None)
  path = ctx.path("config.json")
  if path.exists():
    new = _without_run_only(json.loads(json.dumps(cfg)))  # a copy: cfg is stored whole
    old = _with_added_fields(_without_run_only(json.loads(path.read_text())), new)
    if old != new:
      diff = sorted(_diff(old, new))
      raise ConfigMismatch(
          f"{ctx.workdir} was made with a different config (differs at {', '.join(diff)}); "
          "use a new --workdir, or delete the old one to start over")
  else:
    write_json_atomic(path, cfg)


# (section, field) pairs that choose how or which part of a run executes, never its results:
# the fold to run, and the preprocessing engine (local processes or Beam: identical records).
RUN_ONLY_FIELDS = (("loso", "fold"), ("preprocess", "engine"), ("preprocess", "beam_runner"),
                   ("preprocess", "beam_options"))


# (section, field) pairs added after workdirs were made, with the value that reproduces such a
# workdir: a stored config without the field reads as having that value (so an old SpotFormer
# workdir resumes with model.dropout_rng='threefry', the default then, and is refused with
# 'hash', the default now).
ADDED_FIELDS = ((("model", "dropout_rng"), "threefry"),)


def _with_added_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
  for (section, field), value in ADDED_FIELDS:
    if (isinstance(old.get(section), dict) and field not in old[section]
        and field in new.get(section, {})):
      old[section][field] = value
  return old


def _without_run_only(cfg: dict[str, Any]) -> dict[str, Any]:
  for section, field in RUN_ONLY_FIELDS:
    cfg.get(section, {}).pop(field, None)
  return cfg


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in set(a) | set(b):
      out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
    return out
  return [] if a == b else [prefix.rstrip(".")]


TASKS = ("spotting", "fesnet", "mer")


def task_stages(config: ml_collections.ConfigDict) -> Any:
  """The module with the stages of ``config.task`` (default 'spotting')."""
  task = config.get("task", "spotting")
  if task == "spotting":
    return stages
  if task == "fesnet":
    from fes_jax.fesnet import stages as fesnet_stages  # pylint: disable=import-outside-toplevel
    return fesnet_stages
  if task == "mer":
    from fes_jax.mer import stages as mer_stages  # pylint: disable=import-outside-toplevel
    return mer_stages
  raise ValueError(f"config.task={task!r} is not one of {list(TASKS)}")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
        fold: int | None = None, stop_after: str | None = None) -> dict[str, Any]:
  """Runs (or resumes) the job. ``fold`` runs only that fold's training (cluster arrays);
  ``stop_after`` ends the run after the named stage (e.g. ``preprocess``: the data stages
  once, before a fold array starts).

  Returns ``{"done": [...], "skipped": [...]}`` listing stage names.
  """
  task = task_stages(config)
  names_known = [s.name for s in task.STAGES]
  if stop_after is not None and stop_after not in names_known:
    raise ValueError(f"stop_after={stop_after!r} is not a stage; stages: {names_known}")
  ctx = Context(config, pathlib.Path(workdir))
  ctx.workdir.mkdir(parents=True, exist_ok=True)
  process = _Processes(config)
  check_config(ctx)
  if fold is None and config.loso.fold >= 0:
    fold = config.loso.fold
  done, skipped = [], []
  for stage in task.STAGES:
    if fold is not None and stage.name in task.AFTER_TRAINING:
      logging.info("single-fold run (fold %d): leaving %s to the run over all folds",
                   fold, stage.name)
      continue
    if stage.per_fold:
      ctx.state["folds"] = _folds(task, ctx, fold)  # the folds this run trains
    names = ([f"{stage.name}_fold{k:03d}" for k in ctx.state["folds"]] if stage.per_fold
             else [stage.name])
    for name in names:
      if marker(ctx, name).exists():
        logging.info("stage %s: complete, skipped", name)
        skipped.append(name)
        continue
      if process.multi and not stage.per_fold:
        if stage.name not in task.AFTER_TRAINING:
          last_data = cluster.StagePlan.of(config).data[-1]
          raise ValueError(
              f"stage {name!r} is not complete: a multi-process run trains folds only; run "
              f"the data stages first in one process (--stop_after={last_data}), see "
              "WORKSPACE.md")
        if not process.main:
          logging.info("stage %s: left to process 0", name)
          continue
      logging.info("stage %s: running", name)
      ctx.state["stage"] = name
      start = time.time()
      record = stage.run(ctx) or {}
      record.update(stage=name, seconds=round(time.time() - start, 2),
                    finished=datetime.datetime.now(datetime.timezone.utc).isoformat())
      together = process.multi and stage.per_fold  # every process ran it
      if together:
        process.barrier(f"{name}-done")  # every process has finished the stage ...
      if process.main:
        write_json_atomic(marker(ctx, name), record)
      if together:
        process.barrier(f"{name}-marked")  # ... and every process sees its marker
      logging.info("stage %s: done in %.1f s", name, record["seconds"])
      done.append(name)
    if stage.name == "prepare_data" and fold is not None:
      _folds(task, ctx, fold)  # a fold that does not exist fails before any more work
    if stage.name == stop_after:
      break
  return {"done": done, "skipped": skipped}


class _Processes:
  """The run's processes: one, or several training every fold together as one JAX program
  (``jax.distributed``; fes_jax/train/mesh.py). With several, the fold stages run in every
  process, only process 0 writes markers and runs the all-folds stages, and barriers keep
  the processes in step. The data stages must be complete first."""

  def __init__(self, config: ml_collections.ConfigDict):
    mode = config.get("train", {}).get("distributed", "auto")
    self.multi, self.main = False, True
    if mode == "no":
      return
    from fes_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel

    if mode == "yes" or mesh_lib.launched_multi_process():
      import jax  # pylint: disable=import-outside-toplevel

      mesh_lib.maybe_initialize_distributed(mode)
      self.multi = jax.process_count() > 1
      self.main = jax.process_index() == 0

  def barrier(self, name: str) -> None:
    if self.multi:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

      multihost_utils.sync_global_devices(name)


def _folds(task: Any, ctx: Context, fold: int | None) -> list[int]:
  subjects = task.fold_subjects(ctx)
  if fold is None:
    return list(range(len(subjects)))
  if not 0 <= fold < len(subjects):
    raise ValueError(f"fold {fold} does not exist: this dataset has {len(subjects)} folds "
                     f"(0..{len(subjects) - 1})")
  return [fold]
