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
       "--fold_parallel=2", "--steps_per_epoch=3"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["platform"] == "cpu" and report["peak"]["flops"] > 0
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
