"""Throughput of MOL's train and inference steps (``tools/benchmark.py`` with a MER config).

The steps are the MER task's own (``fes_jax.mer.train.compiled_steps``: MOL's joint loss with
the config's weights, Adam / AdamW, NaN guard, donated state, the batch split over a mesh of
the local devices), on random clips of the config's shape: one sample = one clip of
``model.num_frames`` grayscale frames with its flow and landmark targets. Reported as the
spotting benchmark does (``fes_jax.train.bench``): parameters, XLA's FLOPs per sample,
samples/s, share of the peak, compile time and XLA's memory analysis.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from fes_jax.mer import train as mer_train
from fes_jax.train import bench, mesh as mesh_lib, state as state_lib


def random_batch(batch: int, cfg: Any, seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch of ``batch`` random clips with targets of MOL's shapes."""
  rng = np.random.default_rng(seed)
  t, s = cfg.num_frames, cfg.image_size
  return {"video": rng.random((batch, t, s, s, cfg.in_channels), np.float32),
          "flow": rng.standard_normal((batch, t - 1, s, s, 2)).astype(np.float32),
          "landmarks": (s * rng.random((batch, t, 2 * cfg.num_landmarks))).astype(np.float32),
          "label": rng.integers(0, cfg.num_classes, batch).astype(np.int32),
          "weight": np.ones(batch, np.float32)}


def benchmark_mol(config: ml_collections.ConfigDict, batch: int, *, steps: int = 5,
                  warmup: int = 1, peak: float | None = None) -> dict[str, Any]:
  """Train and inference throughput of the config's MOL at ``batch`` clips."""
  cfg = mer_train.model_config(config)
  mesh = mesh_lib.make_mesh(jax.local_devices())
  mesh_lib.check_batch_divisible(batch, mesh)
  seed = int(config.train.get("seed", 0))
  graphdef, graphdef_eval, params, rest = mer_train.init_model(
      cfg, seed, mer_train._compiler_options(config, init=True))  # pylint: disable=protected-access
  n_params = state_lib.count_params_of(params)
  tx, schedule = mer_train.make_optimizer(config.train)
  state = mesh_lib.replicate(state_lib.init_state(params, rest, tx), mesh)
  data = mesh_lib.batch_sharding(mesh)
  arrays = {k: jax.make_array_from_process_local_data(data, v)
            for k, v in random_batch(batch, cfg, seed).items()}
  start = time.perf_counter()
  train_c, eval_c = mer_train.compiled_steps(config, mesh, graphdef, graphdef_eval, state, tx,
                                             schedule, batch, batch)
  compile_s = time.perf_counter() - start  # both steps (compiled together)
  holder = {"state": state}

  def run_train():
    holder["state"], metrics = train_c(holder["state"], arrays)
    return metrics

  train_times = bench._time(run_train, steps, warmup)  # pylint: disable=protected-access
  infer_times = bench._time(lambda: eval_c(holder["state"], arrays), steps, warmup)  # pylint: disable=protected-access
  devices = mesh.devices.size
  summary = bench._summary  # pylint: disable=protected-access
  out = {"model": "mol", "batch": batch, "params": n_params, "sample": "clip",
         "frames_per_clip": cfg.num_frames, "image_size": cfg.image_size,
         "compute_dtype": config.train.compute_dtype, "devices": devices,
         "train": summary(train_c, compile_s, train_times, batch, peak, devices),
         "inference": summary(eval_c, 0.0, infer_times, batch, peak, devices)}
  out["inference"]["compile_s"] = "with train"  # compiled together with the train step
  return out
