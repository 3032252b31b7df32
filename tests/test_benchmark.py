"""tools/benchmark.py on a tiny SpotFormer: JSON and markdown outputs, a missing reference,
the fold-parallel comparison."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TINY = ["--config.model.dim=32", "--config.model.heads=2", "--config.model.dim_head=16",
        "--config.model.mlp_dim=32"]


def test_benchmark_tiny_model(tmp_path):
  env = dict(os.environ, XLA_FLAGS="")  # one CPU device, as a user's run
  out, md = tmp_path / "bench.json", tmp_path / "bench.md"
  run = subprocess.run(
      [sys.executable, "tools/benchmark.py", "--config=configs/spotformer_synthetic.py",
       *TINY, "--batch_sizes=32", "--steps=2", "--warmup=1", "--matmul_size=512",
       f"--out={out}", f"--markdown={md}", f"--reference_dir={tmp_path / 'no_checkout'}",
       "--fold_parallel=2", "--steps_per_epoch=3", f"--profile={tmp_path / 'prof'}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["platform"] == "cpu" and report["peak"]["flops"] > 0
  # The peak is the best of a measurement before and one after the models.
  assert len(report["peak"]["measured"]) == 2
  assert report["peak"]["flops"] == max(report["peak"]["measured"])
  if sys.platform == "linux":  # re-executed with fes_jax.malloc_tuning's settings
    assert "glibc.malloc.arena_max=1" in report["glibc_tunables"]
  (r,) = report["results"]
  assert r["model"] == "spotformer" and r["batch"] == 32 and r["params"] == 52_042
  for part in ("train", "inference"):
    s = r[part]
    assert s["samples_per_s"] > 0 and s["compile_s"] > 0
    assert s["flops_per_sample"] > 0 and 0 < s["share_of_peak"]
    assert s["memory"]["peak_estimate_bytes"] > 0
  # A train step costs more than the forward pass (backward ~2x the forward).
  assert r["train"]["flops_per_sample"] > 2 * r["inference"]["flops_per_sample"]
  (ref,) = report["reference"]
  assert ref["status"].startswith("skipped") and "model.py not found" in ref["status"]
  table = md.read_text()
  assert "| spotformer | 32 | 52,042 |" in table and "PyTorch reference" in table
  assert "| spotformer | 32 |" in run.stdout
  (fp,) = report["fold_parallel"]
  assert fp["model"] == "spotformer" and fp["batch"] == 32 and fp["folds"] == 2
  assert fp["nominal_fold_steps"] == 100 * 3  # the config's 100 epochs x --steps_per_epoch
  for mode in ("sequential", "parallel"):
    m = fp[mode]
    assert m["s_per_fold_step"] > 0 and m["compile_s"] > 0
    assert m["folds_per_hour"] == pytest.approx(3600 / (300 * m["s_per_fold_step"]))
  assert fp["speedup"] == pytest.approx(fp["sequential"]["s_per_fold_step"]
                                        / fp["parallel"]["s_per_fold_step"])
  assert "nominal fold of 300 train steps" in table
  assert "| spotformer | 32 | 2 | sequential |" in table
  # --profile: the trace of two train steps, summarised per XLA op of the compiled step.
  prof = r["train"]["op_profile"]
  assert prof["steps"] == 2 and prof["ops_traced"] > 20
  assert (tmp_path / "prof/spotformer_b32/op_profile.md").exists()
  assert json.loads((tmp_path / "prof/spotformer_b32/op_profile.json").read_text()) == prof
  # The traced ops are the step's work: most of its wall time, at most one op per core.
  assert 0.3 * prof["wall_ms_per_step"] < prof["op_ms_per_step"]
  assert prof["op_ms_per_step"] < prof["wall_ms_per_step"] * (os.cpu_count() + 1)
  assert 0 < prof["backward_ms_per_step"] < prof["op_ms_per_step"]
  assert all("train_step" in o["source"] for o in prof["top_ops"][:5])
  assert "| kind | ms / step |" in run.stdout


def test_hlo_ops_names_kinds_and_sources():
  import jax
  import jax.numpy as jnp

  from fes_jax.train import op_profile

  def f(x, w):
    return jnp.tanh(x @ w).sum(), (x * 2, x + 1)  # a tuple-shaped output too

  text = jax.jit(jax.grad(lambda x, w: f(x, w)[0], argnums=1)).lower(
      jnp.ones((64, 32)), jnp.ones((32, 16))).compile().as_text()
  ops = op_profile.hlo_ops(text)
  assert ops, text
  kinds = {o["kind"] for o in ops.values()}
  assert kinds & {"dot", "__ynn_fusion", "__onednn_fusion", "kOutput", "kLoop"}
  assert any("transpose(jvp" in o["source"] for o in ops.values())  # backward ops named
  entry = text[text.index("ENTRY"):]
  roots = [l for l in entry.splitlines() if l.strip().startswith("ROOT")]
  assert roots and any(name in roots[0] for name in ops)


def test_remeasured_peak_keeps_the_larger_and_rescales_shares(monkeypatch):
  from fes_jax.train import bench

  results = [{"train": {"achieved_flops": 50.0, "share_of_peak": 0.5},
              "inference": {"achieved_flops": 80.0, "share_of_peak": 0.8}}]
  peak = {"flops": 100.0, "measured": [100.0], "source": "measured 2048^3 float32 matmul",
          "device_kind": "cpu"}
  monkeypatch.setattr(bench, "measure_matmul_peak", lambda n, dtype=None: 200.0)
  peak = bench.remeasure_cpu_peak(peak, results, "float32")
  assert peak["flops"] == 200.0 and peak["measured"] == [100.0, 200.0]
  assert "best of 2" in peak["source"]
  assert results[0]["train"]["share_of_peak"] == 0.25
  assert results[0]["inference"]["share_of_peak"] == 0.4
  monkeypatch.setattr(bench, "measure_matmul_peak", lambda n, dtype=None: 150.0)
  peak = bench.remeasure_cpu_peak(peak, results, "float32")  # a lower one changes nothing
  assert peak["flops"] == 200.0 and results[0]["train"]["share_of_peak"] == 0.25
