"""Batch benchmark of the spotting models and FESNet: throughput, FLOPs, share of peak, memory.

  python tools/benchmark.py --config=configs/spotformer_synthetic.py \\
      [--models=spotformer,seq_st,paral_st,simul_ts,spot_gcn] [--batch_sizes=128,512] \\
      [--out=FILE.json] [--markdown=FILE.md] [--reference_dir=PATH/TO/SpotFormer] \\
      [--fold_parallel=K [--steps_per_epoch=N]] [--profile=DIR]

Per model and batch (in windows = samples): parameters, FLOPs per sample (XLA cost analysis
of the compiled step), train and inference samples/s, achieved FLOP/s and its share of the
device's peak (measured matmul peak on CPU, datasheet peak on GPU / TPU), XLA's memory
estimate, the process's peak RSS and compile times; as JSON and a markdown table (printed).

``--profile=DIR`` (spotting models) traces two train steps per model and batch with
``jax.profiler`` into ``DIR/<model>_b<batch>/`` and summarises the trace per XLA op
(``fes_jax/train/op_profile.py``:
milliseconds per step by op kind and for the slowest ops, forward or backward, the source
operation): ``op_profile.md`` (printed) and ``op_profile.json``.

``--fold_parallel=K`` (K >= 2) adds the fold-parallel comparison (``train.fold_parallel``): per
model and batch (in windows per fold), K sequential train steps vs one step of the vmapped
K-fold program: compile time, seconds per fold-step and folds/hour for a nominal fold of the
config's ``train.epochs`` x steps per epoch (``--steps_per_epoch``, default the config's
``train.steps_per_epoch``; needed when that is 0 = auto), counting train steps only.

FESNet (a config with ``task = 'fesnet'``, e.g. ``configs/fesnet_synthetic.py``): parameters,
FLOPs per clip, train and inference clips/s of the config's model (batches in clips of
``model.num_frames`` frames; default batch: the config's ``train.batch_clips``):

  python tools/benchmark.py --config=configs/fesnet_synthetic.py --batch_sizes=8,16

MOL (a config with ``task = 'mer'``, e.g. ``configs/mol_synthetic.py``): parameters, FLOPs
per clip, train and inference clips/s of the config's MOL (batches in clips of 8 frames;
default batch: the config's ``train.batch_size``; ``fes_jax/mer/bench.py``):

  python tools/benchmark.py --config=configs/mol_synthetic.py --batch_sizes=4,8

``--reference_dir``: a checkout of the authors' PyTorch code (KinopioIsAllIn/SpotFormer, its
``model.py``); its ``MSSTGT`` is timed in the same run at the same batch (AdamW step on the
same loss terms; inference under ``torch.no_grad``). Needs ``torch`` and ``einops``; when
either or the directory is missing the output says so and the rest still runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import sys
import time
import types
from typing import Any

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
  from fes_jax import malloc_tuning  # pylint: disable=g-import-not-at-top

  malloc_tuning.reexec_with_tunables()  # as fes_jax.main: XLA's buffers stay mapped

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (its model section).")
_MODELS = flags.DEFINE_string("models", "", "Comma-separated model names; default: the "
                              "config's model (spotformer with the config's variant).")
_BATCHES = flags.DEFINE_string("batch_sizes", "512", "Comma-separated batches in windows.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per measurement (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compiling.")
_DTYPE = flags.DEFINE_string("compute_dtype", "", "float32 | bfloat16; default: the config's "
                             "train.compute_dtype.")
_OUT = flags.DEFINE_string("out", "", "Write the JSON results here.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Write the markdown table here too.")
_REFERENCE = flags.DEFINE_string("reference_dir", "", "The authors' SpotFormer checkout.")
_PROFILE = flags.DEFINE_string("profile", "", "Spotting models: also trace two train steps per "
                                "model and batch into DIR/<model>_b<batch>/ and summarise "
                                "them per XLA op (op_profile.md / .json; the trace opens in "
                                "TensorBoard).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "n of the CPU peak matmul (n x n x n).")
_FOLD_PARALLEL = flags.DEFINE_integer("fold_parallel", 0, "K >= 2: also compare K sequential "
                                      "fold-steps with one K-fold vmapped step (folds/hour).")
_STEPS_PER_EPOCH = flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch of the nominal "
                                        "fold (folds/hour); default: train.steps_per_epoch.")
flags.mark_flag_as_required("config")


def _rss_bytes() -> int:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _torch_loss(torch, logits, feats, batch):
  """The spotting loss (fes_jax.losses defaults, every window valid) in PyTorch."""
  f = torch.nn.functional
  t = {k: torch.from_numpy(v.reshape(-1)) for k, v in batch.items() if k != "features"}

  def focal(z, y, a):
    p = torch.sigmoid(z)
    pos = a * (y - p).abs() * (y > 0) * torch.log(p + 1e-5)
    neg = (1 - a) * (y + 0.16 - p).abs() * (y == 0) * torch.log(1 - p + 1e-5)
    return -(pos + neg).mean()

  def supcon(z, y):
    logits = z @ z.T / 0.5
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    not_self = 1 - torch.eye(len(y))
    pos = (y[:, None] == y[None, :]).float() * not_self
    log_prob = logits - torch.log((logits.exp() * not_self).sum(1, keepdim=True) + 1e-6)
    return (-(0.5 / 0.07) * (pos * log_prob).sum(1) / (pos.sum(1) + 1e-6)).mean()

  me = (1.8 * focal(logits[:, 6], t["me_apex"], 0.9)
        + f.cross_entropy(logits[:, 0:3], t["me_onoff"].long())
        + 0.1 * focal(logits[:, 8], t["me_expr"], 0.8))
  mae = (focal(logits[:, 7], t["mae_apex"], 0.9)
         + f.cross_entropy(logits[:, 3:6], t["mae_onoff"].long())
         + 0.1 * focal(logits[:, 9], t["mae_expr"], 0.8))
  return me + 0.5 * mae + 0.005 * supcon(feats, t["cls"].long())


def time_reference(reference_dir: str, batch_windows: int, steps: int, warmup: int
                   ) -> dict[str, Any]:
  """The authors' MSSTGT in PyTorch (CPU threads = all cores), or why it was skipped."""
  root = pathlib.Path(reference_dir).expanduser()
  if not (root / "model.py").is_file():
    return {"status": f"skipped: {root / 'model.py'} not found"}
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {"status": "skipped: PyTorch is not installed (CPU wheel: pip install torch "
                      "--index-url https://download.pytorch.org/whl/cpu)"}
  note = []
  try:
    import timm  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:  # model.py imports timm's trunc_normal_ only for an unused _init_weights
    stub = types.ModuleType("timm.models.layers")
    stub.trunc_normal_ = torch.nn.init.trunc_normal_
    sys.modules.setdefault("timm", types.ModuleType("timm"))
    sys.modules.setdefault("timm.models", types.ModuleType("timm.models"))
    sys.modules["timm.models.layers"] = stub
    note.append("timm absent: stubbed trunc_normal_ (used only by the unused _init_weights)")
  sys.path.insert(0, str(root))
  try:
    import model as ref  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return {"status": f"skipped: cannot import {root / 'model.py'}: {e}"}
  finally:
    sys.path.remove(str(root))
  from fes_jax.train import bench  # pylint: disable=import-outside-toplevel

  torch.manual_seed(270)
  torch.set_num_threads(os.cpu_count() or 1)
  net = ref.MSSTGT(seq_len=17, num_classes=10, dim=256, depth=4, heads=4, mlp_dim=256,
                   dropout=0.1, emb_dropout=0.1)
  host = bench.random_batch(batch_windows, 17, 10)
  x = torch.from_numpy(host["features"].reshape((batch_windows, 17, 10, 2)))
  x = x.permute(0, 3, 1, 2).contiguous()  # (N, C, T, V) as the reference reads
  opt = torch.optim.AdamW(net.parameters(), lr=2e-4, betas=(0.7, 0.9), weight_decay=0.1)

  def train_step():
    out = net(x)
    loss = _torch_loss(torch, out[0].reshape(batch_windows, 10),
                       out[1].reshape(batch_windows, -1), host)
    opt.zero_grad()
    loss.backward()
    opt.step()

  def measure(fn):
    for _ in range(warmup):
      fn()
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]

  net.train()
  train_s = measure(train_step)
  net.eval()
  with torch.no_grad():
    infer_s = measure(lambda: net(x))
  return {"status": "ok", "torch": torch.__version__, "threads": torch.get_num_threads(),
          "params": sum(p.numel() for p in net.parameters()), "notes": note,
          "train_samples_per_s": batch_windows / train_s,
          "inference_samples_per_s": batch_windows / infer_s}


def _fmt(x: Any, scale: float = 1.0, digits: int = 1) -> str:
  return "-" if x is None else f"{x / scale:,.{digits}f}"


def markdown(results: list[dict[str, Any]], peak: dict[str, Any],
             reference: list[dict[str, Any]]) -> str:
  peak_text = _fmt(peak["flops"], 1e9) + " GFLOP/s" if peak["flops"] else "unknown"
  lines = [f"Device: {peak['device_kind']}; peak {peak_text} ({peak['source']}).", "",
           "| model | batch | params | GFLOP/sample train / infer | train samples/s | "
           "train GFLOP/s (% peak) | infer samples/s | infer GFLOP/s (% peak) | "
           "compile s train / infer | XLA mem train MiB | peak RSS MiB |",
           "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|"]
  for r in results:
    tr, inf = r["train"], r["inference"]

    def share(s):
      pct = "-" if s["share_of_peak"] is None else f"{100 * s['share_of_peak']:.0f}%"
      return f"{_fmt(s['achieved_flops'], 1e9)} ({pct})"

    mem = (tr["memory"] or {}).get("peak_estimate_bytes")
    lines.append(
        f"| {r['model']} | {r['batch']} | {r['params']:,} | "
        f"{_fmt(tr['flops_per_sample'], 1e9, 3)} / {_fmt(inf['flops_per_sample'], 1e9, 3)} | "
        f"{tr['samples_per_s']:.1f} | {share(tr)} | {inf['samples_per_s']:.1f} | "
        f"{share(inf)} | {tr['compile_s']} / {inf['compile_s']} | {_fmt(mem, 2**20, 0)} | "
        f"{_fmt(r['rss_bytes'], 2**20, 0)} |")
  for ref in reference:
    if ref["status"] == "ok":
      lines.append(f"| PyTorch MSSTGT (reference) | {ref['batch']} | {ref['params']:,} | - | "
                   f"{ref['train_samples_per_s']:.1f} | - | "
                   f"{ref['inference_samples_per_s']:.1f} | - | - | - | - |")
    else:
      lines.append(f"\nPyTorch reference (batch {ref['batch']}): {ref['status']}")
  return "\n".join(lines) + "\n"


def markdown_fold_parallel(results: list[dict[str, Any]]) -> str:
  """The fold-parallel comparison as a markdown table."""
  r0 = results[0]
  lines = [f"Fold-parallel training: K folds in one vmapped program vs K sequential steps; "
           f"folds/hour for a nominal fold of {r0['nominal_fold_steps']:,} train steps "
           f"({r0['nominal_note']}; train steps only: no input pipeline, compile, checkpoints "
           "or evaluation).", "",
           "| model | batch per fold | K | mode | compile s | s per fold-step | folds/hour |",
           "|---|---:|---:|---|---:|---:|---:|"]
  for r in results:
    for mode in ("sequential", "parallel"):
      m = r[mode]
      label = mode if mode == "sequential" else f"parallel ({r['speedup']:.2f}x)"
      lines.append(f"| {r['model']} | {r['batch']} | {r['folds']} | {label} | {m['compile_s']} "
                   f"| {m['s_per_fold_step']:.4f} | {m['folds_per_hour']:,.1f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  from fes_jax.models import ModelConfig  # pylint: disable=import-outside-toplevel
  from fes_jax.train import bench  # pylint: disable=import-outside-toplevel

  cfg = _CONFIG.value
  dtype = _DTYPE.value or cfg.train.get("compute_dtype", "float32")
  if _PROFILE.value and cfg.get("task", "spotting") != "spotting":
    raise app.UsageError("--profile traces the spotting models' train step only")
  if cfg.get("task", "spotting") == "mer":
    return main_mol(cfg)
  if cfg.get("task", "spotting") == "fesnet":
    return main_fesnet(cfg, dtype)
  model_cfg = ModelConfig.from_mapping(cfg.model)
  names = [m.strip() for m in (_MODELS.value or cfg.model.name).split(",") if m.strip()]
  batches = [int(b) for b in _BATCHES.value.split(",") if b.strip()]
  peak = bench.device_peak(dtype, _MATMUL.value)
  results, reference = [], []
  for name in names:
    for batch in batches:
      r = bench.benchmark_model(name, model_cfg, batch, compute_dtype=dtype,
                                steps=_STEPS.value, warmup=_WARMUP.value,
                                seed=int(cfg.train.get("seed", 0)), peak=peak["flops"],
                                profile_dir=(os.path.join(_PROFILE.value, f"{name}_b{batch}")
                                             if _PROFILE.value else None))
      r["rss_bytes"] = _rss_bytes()
      results.append(r)
      print(f"{name} batch {batch}: train {r['train']['samples_per_s']:.1f} samples/s, "
            f"inference {r['inference']['samples_per_s']:.1f} samples/s", flush=True)
      if "op_profile" in r["train"]:
        from fes_jax.train import op_profile  # pylint: disable=import-outside-toplevel

        print(op_profile.markdown(r["train"]["op_profile"]), flush=True)
  fold_parallel = []
  if _FOLD_PARALLEL.value:
    k = _FOLD_PARALLEL.value
    if k < 2:
      raise app.UsageError(f"--fold_parallel must be >= 2 (folds per program), got {k}")
    spe = _STEPS_PER_EPOCH.value or int(cfg.train.get("steps_per_epoch", 0))
    if spe < 1:
      raise app.UsageError("the config's train.steps_per_epoch is 0 (auto: set by the data); "
                           "pass --steps_per_epoch=N for the nominal fold of folds/hour")
    epochs = int(cfg.train.epochs)
    source = "--steps_per_epoch" if _STEPS_PER_EPOCH.value else "train.steps_per_epoch"
    for name in names:
      for batch in batches:
        r = bench.benchmark_fold_parallel(name, model_cfg, batch, k,
                                          nominal_fold_steps=epochs * spe, compute_dtype=dtype,
                                          steps=_STEPS.value, warmup=_WARMUP.value,
                                          seed=int(cfg.train.get("seed", 0)))
        r["nominal_note"] = f"train.epochs {epochs} x {source} {spe}"
        fold_parallel.append(r)
        print(f"{name} batch {batch}, {k} folds: sequential "
              f"{r['sequential']['folds_per_hour']:.1f} folds/h, parallel "
              f"{r['parallel']['folds_per_hour']:.1f} folds/h", flush=True)
  if _REFERENCE.value:
    for batch in batches:
      try:
        ref = time_reference(_REFERENCE.value, batch, _STEPS.value, _WARMUP.value)
      except Exception as e:  # pylint: disable=broad-except  # the user's torch install
        ref = {"status": f"failed: {type(e).__name__}: {e}"}
      ref["batch"] = batch
      reference.append(ref)
  peak = bench.remeasure_cpu_peak(peak, results, dtype, _MATMUL.value)
  table = markdown(results, peak, reference)
  if fold_parallel:
    table += "\n" + markdown_fold_parallel(fold_parallel)
  print(table)
  _write(table, peak, dtype, results, reference=reference, fold_parallel=fold_parallel,
         note="timings are medians of --steps steps after --warmup; other processes on the "
              "machine change them")


def _write(table: str, peak: dict[str, Any], dtype: str, results: list[Any], *,
           note: str, **extra: Any) -> None:
  """Writes --out (JSON: device, peak, results and ``extra``) and --markdown (``table``)."""
  import jax  # pylint: disable=import-outside-toplevel

  report = {"device": peak["device_kind"], "platform": jax.devices()[0].platform,
            "devices": jax.local_device_count(), "cpu_count": os.cpu_count(), "peak": peak,
            "compute_dtype": dtype, "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "results": results, **extra, "note": note}
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(report, indent=2, default=str) + "\n")
  if _MARKDOWN.value:
    pathlib.Path(_MARKDOWN.value).write_text(table)


def _clip_benchmark(task: str, model: str, default_batch: int, dtype: str,
                    run: Any, title: str) -> None:
  """One row per batch size in clips for a clip model (FESNet, MOL): ``run(batch, peak)``
  measures one batch; prints, and writes --out / --markdown like the spotting benchmark."""
  from fes_jax.train import bench  # pylint: disable=import-outside-toplevel

  if _FOLD_PARALLEL.value or _REFERENCE.value or _MODELS.value not in ("", model):
    raise app.UsageError("--fold_parallel, --reference_dir and --models are for the spotting "
                         f"models; a {task} config benchmarks {model} only")
  text = _BATCHES.value if flags.FLAGS["batch_sizes"].present else str(default_batch)
  peak = bench.device_peak(dtype, _MATMUL.value)
  results = []
  for batch in [int(b) for b in text.split(",") if b.strip()]:
    r = run(batch, peak["flops"])
    r["rss_bytes"] = _rss_bytes()
    results.append(r)
    print(f"{model} batch {batch} clips: train {r['train']['samples_per_s']:.2f} clips/s, "
          f"inference {r['inference']['samples_per_s']:.2f} clips/s", flush=True)
  peak = bench.remeasure_cpu_peak(peak, results, dtype, _MATMUL.value)
  table = title + "\n\n" + markdown(results, peak, [])
  print(table)
  _write(table, peak, dtype, results, reference=[], fold_parallel=[], task=task,
         note="samples are clips; timings are medians of --steps steps after --warmup; "
              "other processes on the machine change them")


def main_fesnet(cfg: Any, dtype: str) -> None:
  """The FESNet benchmark (``config.task == 'fesnet'``): one row per batch size in clips."""
  from fes_jax.models.fesnet import FesnetConfig  # pylint: disable=import-outside-toplevel
  from fes_jax.train import bench  # pylint: disable=import-outside-toplevel

  model_cfg = FesnetConfig.from_mapping(cfg.model)

  def run(batch, peak):
    return bench.benchmark_fesnet(model_cfg, batch, compute_dtype=dtype, steps=_STEPS.value,
                                  warmup=_WARMUP.value, seed=int(cfg.train.get("seed", 0)),
                                  peak=peak, train_cfg=cfg.train)

  _clip_benchmark("fesnet", "fesnet", cfg.train.batch_clips, dtype, run,
                  f"FESNet ({cfg.model.get('preset', '')}): a sample is one clip of "
                  f"{model_cfg.num_frames} frames of {model_cfg.image_size} x "
                  f"{model_cfg.image_size}; batch in clips.")


def main_mol(cfg: Any) -> None:
  """The MOL benchmark (``config.task == 'mer'``): one row per batch size in clips."""
  from fes_jax.mer import bench as mer_bench  # pylint: disable=import-outside-toplevel

  if _DTYPE.value and _DTYPE.value != cfg.train.compute_dtype:
    raise app.UsageError("for MOL set --config.train.compute_dtype instead of --compute_dtype")

  def run(batch, peak):
    return mer_bench.benchmark_mol(cfg, batch, steps=_STEPS.value, warmup=_WARMUP.value,
                                   peak=peak)

  _clip_benchmark("mer", "mol", cfg.train.batch_size, cfg.train.compute_dtype, run,
                  f"MOL ({cfg.model.get('preset', '')}, {cfg.model.get('size', '')}): a "
                  "sample is one clip of 8 frames; batch in clips.")


if __name__ == "__main__":
  app.run(main)
