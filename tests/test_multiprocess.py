"""Multi-process JAX: ``python -m fes_jax.main --fold=0`` as 2 processes on localhost.

Each process simulates 2 CPU devices (4 in all), learns its place from JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID (fes_jax/train/mesh.py), reads its own share of the
training split (``tfds.even_splits``) and feeds its half of every global batch
(``jax.make_array_from_process_local_data``); the gradients and BatchNorm statistics are
all-reduced across the processes (gloo). The reference is one process with 4 simulated
devices fed the same global batches (process 0's local batch in rows 0-3, process 1's in rows
4-7: the 2 processes' input pipelines, run side by side in one process). Final train state
(orbax checkpoint, written by both processes together), per-epoch losses and the held-out
predictions (gathered from both processes, written by process 0) must match.

The run: the CAS(ME)^2-layout fixture (2 subjects, 3 videos of 24 frames), SpoT-GCN (it
compiles in a third of the tiny SpotFormer's time; BatchNorm too), 2 epochs of 2 steps of 8
segments, Adam's epsilon raised to 1e-3 (see the tolerance below).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from fes_jax import cluster

from conftest import ROOT
import fixtures

CONFIG = str(ROOT / "configs/spot_gcn.py") + ":dataset=casme2"
# Adam's first steps move every parameter by about +-lr whatever its gradient's size when
# |gradient| >> eps (1e-8 by default), so parameters whose gradient is round-off (biases that
# a BatchNorm cancels) move by +-lr in a direction round-off picks: the 2-process and the
# 1-process runs, whose all-reduces sum in different orders, then differ by ~lr on them. With
# eps 1e-3 (typical gradients here are ~1e-2) round-off gradients move nothing.
ADAM_EPS = 1e-3

# The reference: one process fed what the 2 processes feed together (see the module doc).
_REFERENCE = """
import sys

import numpy as np

from fes_jax import cluster, input_pipeline
from fes_jax.train import data as data_lib, step as step_lib

PROCESSES = 2


def host_train_batches(builder, split, *, batch_segments, seed, num_nodes):
  def batches(epoch):
    streams = [input_pipeline.make_dataset(
        builder, split, batch_size=batch_segments, shuffle=True,
        seed=data_lib.epoch_seed(seed, epoch), drop_no_expression=True, repeat=True,
        process_index=i, process_count=PROCESSES) for i in range(PROCESSES)]
    for parts in zip(*streams):
      yield step_lib.step_batch({k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
                                num_nodes)
  return batches


data_lib.host_train_batches = host_train_batches
cluster.run_main(sys.argv[1:])
"""


def _two_processes(workdir, argv) -> list[subprocess.Popen]:
  """``fes_jax.main`` as processes 0 and 1 of one JAX program (2 CPU devices each)."""
  coordinator = f"localhost:{_free_port()}"
  return [subprocess.Popen(
      [sys.executable, "-m", "fes_jax.main", f"--workdir={workdir}", *argv],
      env=_env(2, JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i)),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", **extra)
  return env


def _final_state(fold_dir, config):
  """The fold's last checkpoint, restored onto one device of this process."""
  import jax  # pylint: disable=import-outside-toplevel

  from fes_jax.models import ModelConfig  # pylint: disable=import-outside-toplevel
  from fes_jax.train import checkpoint, mesh as mesh_lib, state as state_lib  # pylint: disable=import-outside-toplevel

  t = config.train
  _, _, params, rest = state_lib.init_model(config.model.name,
                                            ModelConfig.from_mapping(config.model), t.seed)
  tx, _ = state_lib.make_optimizer(state_lib.OptimizerConfig.from_mapping(t),
                                   t.steps_per_epoch, params)
  like = mesh_lib.replicate(state_lib.init_state(params, rest, tx),
                            mesh_lib.make_mesh(jax.devices()[:1]))
  ckpt = checkpoint.FoldCheckpoints(fold_dir / "checkpoints")
  try:
    assert ckpt.all_epochs() == [1, 2]
    state, meta, _ = ckpt.restore(2, like)
  finally:
    ckpt.close()

  def flat(tree):
    leaves = jax.tree_util.tree_leaves_with_path(checkpoint.keys_to_data(tree))
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}

  return flat(state), flat(like), meta


def _sorted_predictions(path):
  with np.load(path) as p:
    order = np.lexsort((p["frame_numbers"], p["video"]))
    return p["probs"][order], p["video"][order], p["frame_numbers"][order]


def test_two_processes_train_like_one(tmp_path):
  from fes_jax import pipeline  # pylint: disable=import-outside-toplevel

  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=24, faces=True)
  flags = fixtures.main_flags(paths)
  config = cluster.load_config(CONFIG, flags + [f"--config.train.adam_eps={ADAM_EPS}"])
  multi, single = tmp_path / "multi", tmp_path / "single"
  pipeline.run(config, multi, stop_after="preprocess")  # the data stages, once
  shutil.copytree(multi, single)
  (tmp_path / "reference.py").write_text(_REFERENCE)

  argv = [f"--config={CONFIG}", "--fold=0", *flags, f"--config.train.adam_eps={ADAM_EPS}"]
  procs = _two_processes(multi, argv)
  procs.append(subprocess.Popen(  # the reference runs beside them
      [sys.executable, str(tmp_path / "reference.py"), f"--workdir={single}", *argv],
      env=_env(4), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=540))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, (out, err), name in zip(procs, outputs, ("process 0", "process 1", "reference")):
    assert p.returncode == 0, f"{name} failed:\n{err[-4000:]}"
  for i in range(2):
    assert f"jax.distributed: process {i} of 2, 2 local / 4 global devices" in outputs[i][1]
  assert "jax.distributed" not in outputs[2][1]

  records = [json.loads((w / "stages/train_fold000.json").read_text()) for w in (multi, single)]
  assert [(r["processes"], r["devices"]) for r in records] == [(2, 4), (1, 4)]
  assert records[0]["held_out"] == records[1]["held_out"] == "s15"

  # Tolerance: the 2-process all-reduce (gloo, between the processes) and the 1-process one
  # may add the 4 devices' partial sums in different orders: float32 round-off, ~1e-7
  # relative per step, carried through 4 steps. Measured: parameters within 1.2e-7, the
  # whole state within 1.5e-6 relative (Adam's second moments, ~6), losses within 1e-7
  # relative, predictions within 1.2e-7. Allowed: rtol 1e-5, atol 1e-6; the parameters move
  # by up to ~4 x lr = 8e-4 (checked below), so other batches would fail by far.
  (a, init, meta_a), (b, _, meta_b) = (_final_state(w / "folds/fold_000", config)
                                       for w in (multi, single))
  assert a.keys() == b.keys() and len(a) > 10
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
  assert int(a[".step"]) == 4
  moved = max(float(np.abs(a[k] - init[k]).max()) for k in a if k.startswith(".params"))
  assert moved > 1e-4
  losses = [[e["train_loss"] for e in m["history"]] for m in (meta_a, meta_b)]
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)

  # Held-out predictions: gathered from both processes (each predicts its share of the
  # held-out segments), written once, the same windows as the single process's.
  pa, pb = (_sorted_predictions(w / "folds/fold_000/predictions.npz") for w in (multi, single))
  np.testing.assert_array_equal(pa[1], pb[1])
  np.testing.assert_array_equal(pa[2], pb[2])
  assert pa[0].shape == (48, 10)  # s15: 2 videos x 24 frames, each window once
  np.testing.assert_allclose(pa[0], pb[0], rtol=1e-5, atol=1e-6)

  # The same two processes over all folds: fold 0 is complete and skipped, fold 1 trains in
  # both, then process 0 alone evaluates, aggregates and writes the report.
  argv_all = [a for a in argv if a != "--fold=0"]
  procs = _two_processes(multi, argv_all)
  try:
    outputs = [p.communicate(timeout=540) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} failed:\n{err[-4000:]}"
  # Process 1 never runs the all-folds stages: it leaves each to process 0 or, when process 0
  # has already written its marker (a race the test must not depend on), finds it complete.
  for stage in ("evaluate", "aggregate", "report"):
    assert f"stage {stage}: running" not in outputs[1][1]
    assert (f"stage {stage}: left to process 0" in outputs[1][1]
            or f"stage {stage}: complete, skipped" in outputs[1][1]), stage
  assert "stage evaluate: running" in outputs[0][1]
  record = json.loads((multi / "stages/train_fold001.json").read_text())
  assert (record["processes"], record["held_out"]) == (2, "s16")
  assert (multi / "stages/report.json").exists() and (multi / "results/report.md").exists()


def test_process_place_from_the_environment(monkeypatch):
  from fes_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel

  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS",
              "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(key, raising=False)
  assert not mesh_lib.launched_multi_process() and mesh_lib.distributed_args_from_env() == {}
  assert mesh_lib.maybe_initialize_distributed("auto") is False  # one process: nothing to do
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:1234")
  assert mesh_lib.launched_multi_process()
  assert mesh_lib.distributed_args_from_env() == {
      "coordinator_address": "host0:1234", "num_processes": 4, "process_id": 3}
  monkeypatch.setenv("JAX_PROCESS_ID", "three")
  with pytest.raises(ValueError, match="JAX_PROCESS_ID must be an integer"):
    mesh_lib.distributed_args_from_env()
  for key in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(key)
  monkeypatch.setenv("SLURM_NTASKS", "2")  # srun: jax finds the rest in Slurm's variables
  assert mesh_lib.launched_multi_process() and mesh_lib.distributed_args_from_env() == {}
