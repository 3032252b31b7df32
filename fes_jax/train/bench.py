"""Throughput of the train and inference steps (used by ``tools/benchmark.py``).

Per model and batch (in windows): parameters, FLOPs per sample from XLA's cost analysis of
the compiled step, samples/s (median of timed steps after a warm-up), achieved FLOP/s and its
share of a peak, compile time, and XLA's memory analysis. The train step is the trainer's own
(``step.train_step``: masked spotting loss, AdamW, NaN guard, donated state) on a
``'data'`` mesh over every local device; inference is the eval-mode forward plus the output
probabilities.

Fold-parallel comparison (``benchmark_fold_parallel``): K sequential single-fold train steps
vs one step of the vmapped K-fold program (``train.fold_parallel``) at the same per-fold
batch: seconds per fold-step of each mode and folds/hour for a nominal fold.

FESNet (``benchmark_fesnet``): the same measurements for ``fes_jax.fesnet.step``'s train step
(FESNet's loss, Adam / AdamW, NaN guard, donated state, the batch split over the mesh) and its
eval-mode forward, with a sample = one clip of T frames (random pixels and labels).

Peaks: on CPU the measured float32 matmul rate (``measure_matmul_peak``); on GPU / TPU the
datasheet dense peak of the compute dtype (``DATASHEET_TFLOPS``, by ``device_kind``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from fes_jax import losses
from fes_jax.models import ModelConfig
from fes_jax.train import mesh as mesh_lib, op_profile, state as state_lib, step as step_lib

# Dense peak TFLOP/s from vendor datasheets (no sparsity): (float32, bfloat16). GPUs' float32
# is the non-tensor-core rate (XLA's default precision for float32 matmuls on NVIDIA GPUs is
# TF32 tensor cores: the float32 share can then exceed 100%).
DATASHEET_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (67.0, 989.0), "H100 80GB HBM3": (67.0, 989.0), "H100 SXM": (67.0, 989.0),
    "H100 PCIe": (51.0, 756.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0),
    "L4": (30.3, 121.0), "A10": (31.2, 125.0), "V100": (15.7, 125.0), "T4": (8.1, 65.0),
    "TPU v4": (275.0, 275.0), "TPU v5 lite": (197.0, 197.0), "TPU v5e": (197.0, 197.0),
    "TPU v5p": (459.0, 459.0), "TPU v5": (459.0, 459.0), "TPU v6 lite": (918.0, 918.0),
    "TPU v6e": (918.0, 918.0),
}


def measure_matmul_peak(n: int = 2048, reps: int = 5, dtype: Any = jnp.float32) -> float:
  """Best FLOP/s of an n x n x n jitted matmul on the default device."""
  a = jnp.ones((n, n), dtype)
  b = jnp.ones((n, n), dtype)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def device_peak(compute_dtype: str, matmul_size: int = 2048) -> dict[str, Any]:
  """``{"flops": peak FLOP/s, "source": ...}`` for the first device."""
  device = jax.devices()[0]
  kind = device.device_kind
  if device.platform == "cpu":
    flops = measure_matmul_peak(matmul_size, dtype=step_lib.COMPUTE_DTYPES[compute_dtype])
    return {"flops": flops, "source": f"measured {matmul_size}^3 {compute_dtype} matmul on "
                                      f"{jax.local_device_count()} CPU device(s)",
            "device_kind": kind, "measured": [flops]}
  for name in sorted(DATASHEET_TFLOPS, key=len, reverse=True):
    if name.lower() in kind.lower():
      tflops = DATASHEET_TFLOPS[name][0 if compute_dtype == "float32" else 1]
      return {"flops": tflops * 1e12 * jax.local_device_count(),
              "source": f"datasheet {name} dense {compute_dtype}", "device_kind": kind}
  return {"flops": None, "source": f"no datasheet peak for {kind!r}", "device_kind": kind}


def remeasure_cpu_peak(peak: dict[str, Any], results: list[dict[str, Any]],
                       compute_dtype: str, matmul_size: int = 2048) -> dict[str, Any]:
  """On CPU, measures the matmul peak again (after the models ran) and keeps the larger of
  the measurements: other load on the machine can only lower one, and a low peak would
  overstate every share. Rescales ``share_of_peak`` of every ``results`` entry (their
  ``train`` / ``inference`` summaries) to it, in place; returns the updated ``peak``."""
  if jax.devices()[0].platform != "cpu" or not peak.get("flops"):
    return peak
  again = measure_matmul_peak(matmul_size, dtype=step_lib.COMPUTE_DTYPES[compute_dtype])
  measured = [*peak.get("measured", [peak["flops"]]), again]
  peak = {**peak, "flops": max(measured), "measured": measured,
          "source": peak["source"].split(";")[0] + f"; best of {len(measured)} measurements, "
                    "before and after the models"}
  for r in results:
    for part in ("train", "inference"):
      s = r.get(part)
      if s and s.get("achieved_flops"):
        s["share_of_peak"] = s["achieved_flops"] / peak["flops"]
  return peak


def random_batch(batch_windows: int, window: int, num_nodes: int, seed: int = 0
                 ) -> dict[str, np.ndarray]:
  """A host batch of segments (16 windows each when the batch allows) with random data."""
  length = 16 if batch_windows % 16 == 0 else 1
  s = batch_windows // length
  rng = np.random.default_rng(seed)
  shape = (s, length)
  return {"features": rng.standard_normal(shape + (window, num_nodes, 2)).astype(np.float32),
          "valid": np.ones(shape, bool), "has_expression": np.ones((s,), bool),
          "me_onoff": rng.integers(0, 3, shape).astype(np.int32),
          "mae_onoff": rng.integers(0, 3, shape).astype(np.int32),
          "me_apex": rng.random(shape).astype(np.float32),
          "mae_apex": rng.random(shape).astype(np.float32),
          "me_expr": (rng.random(shape) > 0.5).astype(np.float32),
          "mae_expr": (rng.random(shape) > 0.5).astype(np.float32),
          "cls": rng.integers(0, 3, shape).astype(np.int32)}


def _flops(compiled: Any) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def _memory(compiled: Any) -> dict[str, int] | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes")
  out = {f: int(getattr(m, f, 0)) for f in fields}
  out["peak_estimate_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                - out["alias_size_in_bytes"] + out["temp_size_in_bytes"])
  return out


def _time(run: Callable[[], Any], steps: int, warmup: int) -> list[float]:
  for _ in range(warmup):
    jax.block_until_ready(run())
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - t)
  return times


def _summary(compiled: Any, compile_s: float, times: list[float], batch: int,
             peak: float | None, devices: int) -> dict[str, Any]:
  flops = _flops(compiled)
  if flops is not None:
    flops *= devices  # the cost analysis of an SPMD program counts one device's share
  median = statistics.median(times)
  out = {"compile_s": round(compile_s, 2), "step_s_median": median, "step_s_min": min(times),
         "samples_per_s": batch / median, "flops_per_step": flops,
         "flops_per_sample": flops / batch if flops else None,
         "achieved_flops": flops / median if flops else None, "memory": _memory(compiled)}
  out["share_of_peak"] = (out["achieved_flops"] / peak) if (peak and flops) else None
  return out


def benchmark_model(name: str, model_cfg: ModelConfig, batch_windows: int, *,
                    compute_dtype: str = "float32", steps: int = 5, warmup: int = 1,
                    seed: int = 0, peak: float | None = None,
                    opt_cfg: state_lib.OptimizerConfig = state_lib.OptimizerConfig(),
                    profile_dir: str | None = None) -> dict[str, Any]:
  """Train and inference throughput of one model at one batch size (in windows).

  ``profile_dir``: also trace two train steps there and summarise them per XLA op
  (``op_profile``; the result's ``train.op_profile``).
  """
  mesh = mesh_lib.make_mesh(jax.local_devices())
  dtype = step_lib.COMPUTE_DTYPES[compute_dtype]
  graphdef, graphdef_eval, params, rest = state_lib.init_model(name, model_cfg, seed)
  n_params = state_lib.count_params_of(params)
  tx, schedule = state_lib.make_optimizer(opt_cfg, 100, params)
  state = mesh_lib.replicate(state_lib.init_state(params, rest, tx), mesh)
  host = random_batch(batch_windows, model_cfg.seq_len, model_cfg.num_nodes, seed)
  mesh_lib.check_batch_divisible(host["valid"].shape[0], mesh)
  data = mesh_lib.batch_sharding(mesh)  # (no TF import: the RSS reported is the model's)
  batch = {k: jax.make_array_from_process_local_data(data, v) for k, v in host.items()}

  train = step_lib.jit_train_step(mesh, graphdef=graphdef, tx=tx, schedule=schedule,
                                  weights=losses.LossWeights(), compute_dtype=dtype)
  t = time.perf_counter()
  train_c = train.lower(state, batch).compile()
  train_compile = time.perf_counter() - t
  holder = {"state": state}

  def run_train():
    holder["state"], metrics = train_c(holder["state"], batch)
    return metrics

  train_times = _time(run_train, steps, warmup)
  train_profile = (op_profile.profile(run_train, train_c.as_text(), profile_dir)
                   if profile_dir else None)

  def infer(params_, rest_, x):
    model = nnx.merge(graphdef_eval, step_lib.cast_floats(params_, dtype), rest_)
    return step_lib.probabilities(model(x.astype(dtype)).logits)

  x = step_lib.windows(batch)[0]
  infer_jit = jax.jit(infer, in_shardings=(mesh_lib.replicated(mesh),) * 2 + (data,),
                      out_shardings=data)
  s = holder["state"]
  t = time.perf_counter()
  infer_c = infer_jit.lower(s.params, s.rest, x).compile()
  infer_compile = time.perf_counter() - t
  infer_times = _time(lambda: infer_c(s.params, s.rest, x), steps, warmup)
  return {"model": name, "batch": batch_windows, "params": n_params,
          "compute_dtype": compute_dtype, "devices": mesh.devices.size,
          "train": {**_summary(train_c, train_compile, train_times, batch_windows, peak,
                               mesh.devices.size),
                    **({"op_profile": train_profile} if train_profile else {})},
          "inference": _summary(infer_c, infer_compile, infer_times, batch_windows, peak,
                                mesh.devices.size)}


def benchmark_fold_parallel(name: str, model_cfg: ModelConfig, batch_windows: int, folds: int,
                            *, nominal_fold_steps: int, compute_dtype: str = "float32",
                            steps: int = 5, warmup: int = 1, seed: int = 0,
                            opt_cfg: state_lib.OptimizerConfig = state_lib.OptimizerConfig()
                            ) -> dict[str, Any]:
  """Sequential folds vs fold-parallel training (``train.fold_parallel``) at one per-fold batch.

  Sequential: the single-fold train step run ``folds`` times (each fold's own batch);
  parallel: one step of the vmapped ``folds``-fold program (``step.jit_folds_train_step``),
  batches (K, S, ...) split along S over every local device. Each timing covers ``folds``
  fold-steps; folds/hour is for a nominal fold of ``nominal_fold_steps`` train steps (train
  steps only: no input pipeline, compile, checkpoints or evaluation).
  """
  mesh = mesh_lib.make_mesh(jax.local_devices())
  dtype = step_lib.COMPUTE_DTYPES[compute_dtype]
  graphdef, _, params, rest = state_lib.init_model(name, model_cfg, seed)
  tx, schedule = state_lib.make_optimizer(opt_cfg, 100, params)
  one = state_lib.init_state(params, rest, tx)
  hosts = [random_batch(batch_windows, model_cfg.seq_len, model_cfg.num_nodes, seed + i)
           for i in range(folds)]
  mesh_lib.check_batch_divisible(hosts[0]["valid"].shape[0], mesh)
  kwargs = dict(graphdef=graphdef, tx=tx, schedule=schedule, weights=losses.LossWeights(),
                compute_dtype=dtype)
  data, stacked_data = mesh_lib.batch_sharding(mesh), mesh_lib.folds_batch_sharding(mesh)
  batches = [{k: jax.make_array_from_process_local_data(data, v) for k, v in h.items()}
             for h in hosts]
  stacked = {k: jax.make_array_from_process_local_data(
      stacked_data, np.stack([h[k] for h in hosts])) for k in hosts[0]}
  out = {"model": name, "batch": batch_windows, "folds": folds, "devices": mesh.devices.size,
         "compute_dtype": compute_dtype, "nominal_fold_steps": nominal_fold_steps}
  modes = {
      "sequential": (step_lib.jit_train_step(mesh, **kwargs), mesh_lib.replicate(one, mesh),
                     batches),
      "parallel": (step_lib.jit_folds_train_step(mesh, **kwargs),
                   mesh_lib.replicate(jax.tree.map(lambda *x: jnp.stack(x), *[one] * folds),
                                      mesh), [stacked])}
  for mode, (jitted, state, mode_batches) in modes.items():
    t = time.perf_counter()
    compiled = jitted.lower(state, mode_batches[0]).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}

    def run(compiled=compiled, holder=holder, mode_batches=mode_batches):
      for b in mode_batches:  # K fold-steps in either mode
        holder["state"], metrics = compiled(holder["state"], b)
      return metrics

    per_fold_step = statistics.median(_time(run, steps, warmup)) / folds
    out[mode] = {"compile_s": round(compile_s, 2), "s_per_fold_step": per_fold_step,
                 "folds_per_hour": 3600.0 / (per_fold_step * nominal_fold_steps)}
  out["speedup"] = out["sequential"]["s_per_fold_step"] / out["parallel"]["s_per_fold_step"]
  return out


def benchmark_fesnet(model_cfg: Any, batch_clips: int, *, compute_dtype: str = "float32",
                     steps: int = 5, warmup: int = 1, seed: int = 0, peak: float | None = None,
                     train_cfg: Any = None) -> dict[str, Any]:
  """Train and inference throughput of FESNet (``model_cfg``: a ``FesnetConfig``) at one batch
  size in clips; ``train_cfg``: the config's ``train`` section (optimizer, loss options)."""
  from fes_jax.fesnet import config as fesnet_config  # pylint: disable=import-outside-toplevel
  from fes_jax.fesnet import step as fesnet_step  # pylint: disable=import-outside-toplevel

  t_cfg = fesnet_config.train_config() if train_cfg is None else train_cfg
  mesh = mesh_lib.make_mesh(jax.local_devices())
  mesh_lib.check_batch_divisible(batch_clips, mesh)
  dtype = step_lib.COMPUTE_DTYPES[compute_dtype]
  graphdef, graphdef_eval, params, rest = fesnet_step.init_fesnet(model_cfg, seed)
  n_params = state_lib.count_params_of(params)
  tx, schedule = fesnet_step.make_optimizer(t_cfg, 100, params)
  state = mesh_lib.replicate(state_lib.init_state(params, rest, tx), mesh)
  rng = np.random.default_rng(seed)
  t, size = model_cfg.num_frames, model_cfg.image_size
  host = {"clips": rng.random((batch_clips, t, size, size, model_cfg.in_channels),
                              np.float32),
          "labels": rng.integers(0, model_cfg.num_classes, (batch_clips, t)).astype(np.int32)}
  data = mesh_lib.batch_sharding(mesh)
  batch = {k: jax.make_array_from_process_local_data(data, v) for k, v in host.items()}
  weights = mesh_lib.replicate(np.ones(model_cfg.num_classes, np.float32), mesh)
  train = fesnet_step.jit_train_step(mesh, graphdef=graphdef, tx=tx, schedule=schedule,
                                     gamma=float(t_cfg.gamma), lsdm_form=t_cfg.lsdm_form,
                                     ce_on=t_cfg.ce_on, compute_dtype=dtype)
  start = time.perf_counter()
  train_c = train.lower(state, batch, weights).compile()
  train_compile = time.perf_counter() - start
  holder = {"state": state}

  def run_train():
    holder["state"], metrics = train_c(holder["state"], batch, weights)
    return metrics

  train_times = _time(run_train, steps, warmup)
  infer = fesnet_step.jit_predict_step(mesh, graphdef=graphdef_eval, compute_dtype=dtype)
  s = holder["state"]
  start = time.perf_counter()
  infer_c = infer.lower(s.params, s.rest, batch["clips"]).compile()
  infer_compile = time.perf_counter() - start
  infer_times = _time(lambda: infer_c(s.params, s.rest, batch["clips"]), steps, warmup)
  return {"model": "fesnet", "batch": batch_clips, "params": n_params, "sample": "clip",
          "frames_per_clip": t, "image_size": size, "compute_dtype": compute_dtype,
          "devices": mesh.devices.size,
          "train": _summary(train_c, train_compile, train_times, batch_clips, peak,
                            mesh.devices.size),
          "inference": _summary(infer_c, infer_compile, infer_times, batch_clips, peak,
                                mesh.devices.size)}
