"""The epoch loop of one fold: fixed steps per epoch, checkpoint every epoch, resume, NaN guard.

Resume is exact: an epoch's batches depend only on (seed, epoch) (``train_batches(epoch)``
builds a fresh, seeded input pipeline per epoch) and the checkpoint holds the whole train
state, so a run restarted from epoch e's checkpoint continues as if never stopped.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, Iterable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fes_jax.train import mesh as mesh_lib, state as state_lib
from fes_jax.train.checkpoint import FoldCheckpoints
from fes_jax.train.metrics import MetricsWriter, to_python
from fes_jax.train.state import TrainState

SELECTIONS = ("last_epoch", "validation")


class NonFiniteTraining(RuntimeError):
  """Too many consecutive steps with a non-finite loss or gradient."""


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Args of :func:`fit`.

  Attributes:
    epochs: epochs in total (a resumed run does the remaining ones).
    steps_per_epoch: train steps per epoch.
    selection: 'last_epoch' (keep the final state) or 'validation' (keep the epoch with the
      lowest validation loss; needs ``validate``).
    max_bad_steps: abort after this many consecutive skipped (non-finite) steps.
  """

  epochs: int
  steps_per_epoch: int
  selection: str = "last_epoch"
  max_bad_steps: int = 10


@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns.

  Attributes:
    state: the state after the last epoch.
    selected: the state whose parameters and statistics the selection keeps.
    selected_epoch: its epoch (1-based).
    history: one record per epoch (restored epochs included).
    resumed_from: the checkpoint epoch this run started from (None: from scratch).
    train_seconds: time in train steps in this run (excludes compile if compiled before).
    train_windows: valid windows trained on in this run.
  """

  state: TrainState
  selected: TrainState
  selected_epoch: int
  history: list[dict[str, Any]]
  resumed_from: int | None
  train_seconds: float
  train_windows: int


def _snapshot(state: TrainState) -> tuple[Any, Any]:
  """A copy of (params, rest): the state donated to the next step cannot be kept."""
  return jax.tree.map(jnp.copy, (state.params, state.rest))


def _epoch_summary(step_metrics: list[dict[str, Any]]) -> dict[str, Any]:
  """Means over the epoch's finite steps of every per-step metric."""
  host = jax.device_get(step_metrics)
  finite = np.array([bool(m["finite"]) for m in host])
  out: dict[str, Any] = {"steps": len(host), "skipped_steps": int((~finite).sum()),
                         "windows": int(sum(float(m["windows"]) for m in host))}
  for key in host[0]:
    if key in ("finite", "bad_steps", "windows"):
      continue
    values = np.array([float(m[key]) for m in host])
    name = "train_loss" if key == "loss" else ("lr" if key == "lr" else f"train_{key}")
    out[name] = float(values[finite].mean()) if finite.any() else float("nan")
  out["lr"] = float(host[0]["lr"])  # the epoch's learning rate (constant within an epoch)
  return out


def fit(state: TrainState, *, train_step: Callable[[TrainState, Any], tuple[TrainState, Any]],
        train_batches: Callable[[int], Iterable[Any]], cfg: FitConfig,
        checkpoints: FoldCheckpoints | None, writer: MetricsWriter,
        validate: Callable[[TrainState], dict[str, float]] | None = None,
        observe: Callable[[int, TrainState], dict[str, float]] | None = None,
        extra_json: dict[str, Any] | None = None,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> FitResult:
  """Trains ``cfg.epochs`` epochs, resuming from the latest checkpoint when there is one.

  Args:
    state: the initial state (also the template for restoring; it is donated).
    train_step: ``(state, batch) -> (state, metrics)`` (jitted, state donated).
    train_batches: ``epoch -> batches`` (epoch 1-based); at least ``steps_per_epoch``.
    cfg: epochs, steps, selection, NaN guard.
    checkpoints: where to save every epoch and resume from (None: no checkpoints).
    writer: TensorBoard + JSON metrics (per epoch).
    validate: ``state -> {"loss": ..., ...}`` on the validation subjects (selection).
    observe: ``(epoch, state) -> {name: value}`` after every epoch, recorded as
      ``oracle_<name>``; it never influences training or selection (the oracle protocol
      predicts the held-out subject here and selects later, in the evaluate stage).
    extra_json: fixed fields written into the metrics JSON beside ``epochs``.
    on_epoch_end: called after an epoch is saved, with (epoch, record) (tests stop here).
  """
  if cfg.selection not in SELECTIONS:
    raise ValueError(f"selection must be one of {SELECTIONS}, got {cfg.selection!r}")
  if cfg.selection == "validation" and validate is None:
    raise ValueError("selection 'validation' needs a validation set")
  history: list[dict[str, Any]] = []
  best = _snapshot(state) if cfg.selection == "validation" else None
  best_epoch, best_loss = 0, float("inf")
  resumed_from = checkpoints.latest_epoch() if checkpoints is not None else None
  if resumed_from is not None:
    state, meta, best = checkpoints.restore(resumed_from, state, best)
    history = list(meta["history"])
    best_epoch = int(meta["best_epoch"])
    best_loss = float("inf") if meta["best_loss"] is None else float(meta["best_loss"])
    logging.info("resumed from epoch %d of %d (%s)", resumed_from, cfg.epochs,
                 checkpoints.directory)
  seconds, windows = 0.0, 0
  for epoch in range(len(history) + 1, cfg.epochs + 1):
    start = time.perf_counter()
    step_metrics, batches = [], iter(train_batches(epoch))
    for _ in range(cfg.steps_per_epoch):
      state, metrics = train_step(state, next(batches))
      if step_metrics:  # NaN guard, one step behind so that dispatch stays asynchronous
        _check(step_metrics[-1], cfg.max_bad_steps, epoch)
      step_metrics.append(metrics)
    _check(step_metrics[-1], cfg.max_bad_steps, epoch)
    record = {"epoch": epoch, **_epoch_summary(step_metrics)}
    elapsed = time.perf_counter() - start
    seconds, windows = seconds + elapsed, windows + record["windows"]
    record.update(seconds=round(elapsed, 3), windows_per_s=record["windows"] / elapsed)
    if validate is not None:
      val = validate(state)
      record.update({f"val_{k}": float(v) for k, v in val.items()})
      if cfg.selection == "validation" and val["loss"] < best_loss:
        best, best_epoch, best_loss = _snapshot(state), epoch, float(val["loss"])
    if observe is not None:
      record.update({f"oracle_{k}": float(v) for k, v in observe(epoch, state).items()})
    if cfg.selection == "last_epoch":
      best_epoch = epoch
    record["selected_epoch"] = best_epoch
    history.append(to_python(record))
    if checkpoints is not None:
      meta = {"epochs_done": epoch, "history": history, "best_epoch": best_epoch,
              "best_loss": best_loss if np.isfinite(best_loss) else None}
      checkpoints.save(epoch, state, meta, best)
    writer.scalars(epoch, {k: v for k, v in record.items() if k != "epoch"})
    writer.write_json({**(extra_json or {}), "epochs": history, "selected_epoch": best_epoch})
    logging.info("epoch %d/%d: loss %.4f, %.1f windows/s, %d skipped steps", epoch,
                 cfg.epochs, record["train_loss"], record["windows_per_s"],
                 record["skipped_steps"])
    if on_epoch_end is not None:
      on_epoch_end(epoch, record)
  if checkpoints is not None:
    checkpoints.wait()
  if not history:
    raise ValueError("no epoch trained: train.epochs must be >= 1")
  selected = state
  if cfg.selection == "validation":
    selected = state._replace(params=best[0], rest=best[1])
  return FitResult(state=state, selected=selected, selected_epoch=best_epoch or cfg.epochs,
                   history=history, resumed_from=resumed_from, train_seconds=seconds,
                   train_windows=windows)


def _check(metrics: dict[str, Any], max_bad_steps: int, epoch: int) -> None:
  bad = int(metrics["bad_steps"])
  if bad >= max_bad_steps:
    raise NonFiniteTraining(
        f"epoch {epoch}: {bad} consecutive steps with a non-finite loss or gradient (limit "
        f"train.max_bad_steps = {max_bad_steps}); the last good state is the latest "
        "checkpoint. Lower the learning rate or check the features for NaN/inf")


def fit_fold(out_dir: Any, state: TrainState, *, checkpoint_keep: int,
             checkpoint_async: bool, **fit_kwargs: Any) -> FitResult:
  """:func:`fit` with a fold's own writer (``<out_dir>/metrics.json``, TensorBoard; process 0
  only) and checkpoints (``<out_dir>/checkpoints``), both closed however it ends."""
  writer = MetricsWriter(out_dir, enabled=mesh_lib.is_writer())
  checkpoints = FoldCheckpoints(pathlib.Path(out_dir) / "checkpoints",
                                max_to_keep=checkpoint_keep, async_save=checkpoint_async)
  try:
    return fit(state, checkpoints=checkpoints, writer=writer, **fit_kwargs)
  finally:
    checkpoints.close()
    writer.close()


def result_record(result: FitResult, rate_name: str | None = None) -> dict[str, Any]:
  """The fit's part of a fold record: epochs, selection, resume, last loss, skipped steps,
  train time and (``rate_name``) training samples per second."""
  record = {
      "epochs": len(result.history), "selected_epoch": result.selected_epoch,
      "resumed_from_epoch": result.resumed_from,
      "final_loss": result.history[-1]["train_loss"],
      "skipped_steps": int(sum(h["skipped_steps"] for h in result.history)),
      "train_seconds": round(result.train_seconds, 2)}
  if rate_name:
    record[rate_name] = (round(result.train_windows / result.train_seconds, 2)
                         if result.train_seconds > 0 else None)
  return record


def run_record(mesh: Any, compute_dtype: str, params: Any) -> dict[str, Any]:
  """Where and how a fold ran: parameters, devices, processes, device kind, compute dtype."""
  return {"params": state_lib.count_params_of(params),
          "devices": int(mesh.devices.size), "processes": jax.process_count(),
          "device_kind": jax.devices()[0].device_kind, "compute_dtype": compute_dtype}
