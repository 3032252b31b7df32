"""Generates a synthetic dataset in the CAS(ME)^2 layout, in parallel, resumably.

Each video is rendered into ``<root>/.synthetic/tmp/``, renamed into ``rawpic/``, its
ground-truth landmarks moved into ``landmarks/``, and only then its completion marker
``<root>/.synthetic/done/<video>.json`` (the video's plan and fingerprint) is written. A rerun
skips a video whose marker matches its fingerprint and whose files are all there; anything
else is rendered again, so a killed run leaves nothing a later run trusts. The coding xlsx, the
frame-count file and ``synthetic_manifest.json`` are written last, each atomically, and are
removed first whenever a run has videos to (re)render or other settings, so no coding file
exists while videos change. Videos an earlier run generated that the plan no longer has are
deleted (only those with a completion marker: nothing else in the folder is touched).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import time
from typing import Any

import numpy as np

from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import layout
from fes_jax.synthetic import plan as plan_lib
from fes_jax.synthetic import subject as subject_lib
from fes_jax.synthetic import tracks as tracks_lib

GENERATOR_VERSION = 1  # bump when rendering changes, so old outputs are not trusted
_STATE = ".synthetic"
CONVENTIONS = {
    "frames": "1-based, img<i>.jpg; landmarks/<s>/<folder>.npy row i-1 = frame i, (x, y) px",
    "profile": "intensity 0 at onset and offset, 1 at apex (raised cosine; MaE may hold "
               "its apex for 'plateau' of apex->offset)",
    "peak_px": "apex displacement of the most-moving landmark of the whole AU combination",
    "au_amp_px": "per AU: apex displacement of its most-moving landmark (x side_gain)",
    "side_gain": "[image-left, image-right] multipliers (asymmetric expressions)",
    "blinks": "start frame, frames (duration), closure (fraction of the eyelid gap)",
    "turns": "start frame, frames to reach target (tx, ty px, roll rad, log-scale, yaw rad, "
             "pitch rad), hold frames, returns over 2x frames when 'returns'",
    "talk": "start frame, frames, syllable rate hz, jaw_px (AU26 amplitude)",
}


@dataclasses.dataclass(frozen=True)
class _Job:
  root: str
  cfg: config_lib.SynthConfig
  seed: int
  plan: dict[str, Any]
  subject_params: dict[str, Any]
  fingerprint: str


def _fingerprint(cfg: config_lib.SynthConfig, seed: int, plan: dict[str, Any],
                 subject_params: dict[str, Any]) -> str:
  content = {k: v for k, v in cfg.to_json().items() if k not in ("workers", "preset")}
  blob = json.dumps([GENERATOR_VERSION, content, seed, plan, subject_params], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _marker(root: pathlib.Path, name: str) -> pathlib.Path:
  return root / _STATE / "done" / f"{name}.json"


def _is_complete(root: pathlib.Path, job: _Job) -> bool:
  marker = _marker(root, job.plan["name"])
  try:
    if json.loads(marker.read_text()).get("fingerprint") != job.fingerprint:
      return False
  except (OSError, ValueError):
    return False
  p, c, n = job.plan["participant"], job.plan["code"], job.plan["num_frames"]
  frames = layout.frames_dir(root, p, c)
  lms = layout.landmarks_path(root, p, c)
  if not lms.is_file() or not frames.is_dir():
    return False
  names = set(os.listdir(frames))
  return len(names) == n and all(layout.frame_file(i) in names for i in (1, n))


_COUNTER = None


def _init_worker(counter) -> None:
  global _COUNTER
  _COUNTER = counter
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)


def _bump(k: int) -> None:
  if _COUNTER is not None:
    with _COUNTER.get_lock():
      _COUNTER.value += k


def render_job(job: _Job) -> dict[str, Any]:
  """Renders one video into place and writes its completion marker; returns the marker."""
  from fes_jax.synthetic import render  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(job.root)
  p, c = job.plan["participant"], job.plan["code"]
  tmp = root / _STATE / "tmp" / f"{job.plan['name']}.{os.getpid()}.{time.time_ns()}"
  start = time.time()
  landmarks, details = render.render_video(job.cfg, job.seed, job.plan, job.subject_params,
                                           tmp / "frames", progress=_bump)
  np.save(tmp / "landmarks.npy", landmarks)
  final = layout.frames_dir(root, p, c)
  final.parent.mkdir(parents=True, exist_ok=True)
  if final.exists():
    shutil.rmtree(final)
  os.replace(tmp / "frames", final)
  lms = layout.landmarks_path(root, p, c)
  lms.parent.mkdir(parents=True, exist_ok=True)
  os.replace(tmp / "landmarks.npy", lms)
  shutil.rmtree(tmp, ignore_errors=True)
  plan = json.loads(json.dumps(job.plan))
  for e, eff in zip(plan["intervals"], details.pop("effective")):
    e.update(eff)  # the exact per-AU apex amplitudes used on this subject
  marker = {"fingerprint": job.fingerprint, "plan": plan, **details,
            "render_seconds": round(time.time() - start, 2)}
  layout.atomic_write_bytes(_marker(root, job.plan["name"]),
                            json.dumps(marker, indent=1).encode())
  return marker


def plan_dataset(cfg: config_lib.SynthConfig, seed: int) -> tuple[list[dict], dict[int, dict]]:
  """Every video's plan and every subject's parameters (cheap, deterministic)."""
  videos = plan_lib.video_list(cfg, seed)
  subjects = {p: subject_lib.sample_params(cfg, plan_lib.rng_for(seed, 0, p))
              for p in sorted({v[0] for v in videos})}
  plans = [plan_lib.plan_video(cfg, seed, *v) for v in videos]
  return plans, subjects


def _run_jobs(jobs: list[_Job], workers: int, show_progress: bool) -> list[dict[str, Any]]:
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  total = sum(j.plan["num_frames"] for j in jobs)
  bar = tqdm(total=total, unit="frame", desc="synthetic", disable=not show_progress)
  try:
    if workers <= 1 or len(jobs) <= 1:
      global _COUNTER
      _COUNTER = None
      out = []
      for j in jobs:
        out.append(render_job(j))
        bar.update(j.plan["num_frames"])
      return out
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(counter,)) as pool:
      result = pool.map_async(render_job, jobs, chunksize=1)
      while not result.ready():
        result.wait(0.5)
        bar.update(counter.value - bar.n)
      bar.update(total - bar.n)
      return result.get()
  finally:
    bar.close()


def _clear_outputs(root: pathlib.Path, keep_settings: str | None) -> None:
  """Removes the dataset-level files unless their manifest has ``keep_settings``."""
  manifest = root / layout.MANIFEST_NAME
  try:
    if keep_settings and json.loads(manifest.read_text()).get("settings") == keep_settings:
      return
  except (OSError, ValueError):
    pass
  for name in (layout.MANIFEST_NAME, layout.XLSX_NAME, layout.COUNTS_NAME):
    (root / name).unlink(missing_ok=True)


def _remove_stale(root: pathlib.Path, wanted: set[str]) -> None:
  """Deletes videos an earlier run generated here that the current plan does not have."""
  done = root / _STATE / "done"
  for marker in sorted(done.glob("*.json")) if done.is_dir() else []:
    if marker.stem in wanted:
      continue
    try:
      old = json.loads(marker.read_text())["plan"]
    except (OSError, ValueError, KeyError):
      marker.unlink()
      continue
    marker.unlink()
    shutil.rmtree(layout.frames_dir(root, old["participant"], old["code"]), ignore_errors=True)
    layout.landmarks_path(root, old["participant"], old["code"]).unlink(missing_ok=True)


def xlsx_rows(plans: list[dict[str, Any]]) -> list[tuple]:
  """The coding-file rows of the planned intervals (see ``layout.write_xlsx``)."""
  rows = []
  for plan in plans:
    for n, e in enumerate(plan["intervals"], 1):
      offset = 0 if e.get("offset_missing") else e["offset"]
      rows.append((plan["participant"], plan["stem"], n, e["onset"], e["apex"], offset, e["aus"],
                   e["emotion"], e["type"], e["self_emotion"]))
  return rows


def generate(root: str | os.PathLike, cfg: config_lib.SynthConfig, seed: int = 0, *,
             workers: int | None = None, show_progress: bool = True) -> dict[str, Any]:
  """Generates (or completes) the dataset for ``cfg`` and ``seed`` under ``root``."""
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  start = time.time()
  plans, subjects = plan_dataset(cfg, seed)
  settings = _fingerprint(cfg, seed, {}, {})
  jobs = [_Job(str(root), cfg, seed, p, subjects[p["participant"]],
               _fingerprint(cfg, seed, p, subjects[p["participant"]])) for p in plans]
  todo = [j for j in jobs if not _is_complete(root, j)]
  _clear_outputs(root, settings if not todo else None)  # no coding file while videos change
  _remove_stale(root, {p["name"] for p in plans})
  shutil.rmtree(root / _STATE / "tmp", ignore_errors=True)
  logging.info("synthetic: %d videos, %d to render", len(jobs), len(todo))
  _run_jobs(todo, cfg.workers if workers is None else workers, show_progress)
  markers = [json.loads(_marker(root, p["name"]).read_text()) for p in plans]
  layout.write_xlsx(root / layout.XLSX_NAME, xlsx_rows(plans))
  layout.write_frame_counts(root / layout.COUNTS_NAME,
                            {p["name"]: p["num_frames"] for p in plans})
  manifest = {
      "generator": "fes_jax.synthetic", "version": GENERATOR_VERSION, "settings": settings,
      "conventions": CONVENTIONS,
      "preset": cfg.preset, "seed": seed, "config": cfg.to_json(),
      "aus": list(tracks_lib.AUS), "subjects": {layout.subject_folder(p): s
                                                 for p, s in subjects.items()},
      "videos": [{k: v for k, v in m.items() if k != "fingerprint"} for m in markers],
  }
  layout.atomic_write_bytes(root / layout.MANIFEST_NAME, json.dumps(manifest).encode())
  frames = sum(p["num_frames"] for p in plans)
  return {"videos": len(plans), "rendered": len(todo), "frames": frames,
          "rendered_frames": sum(j.plan["num_frames"] for j in todo),
          "mae": sum(e["type"] == "mae" for p in plans for e in p["intervals"]),
          "me": sum(e["type"] == "me" for p in plans for e in p["intervals"]),
          "seconds": round(time.time() - start, 2)}


def generate_dataset(root: str | os.PathLike, preset: str = "default", seed: int = 0,
                     workers: int | None = None, show_progress: bool = True,
                     **overrides: Any) -> dict[str, Any]:
  """``generate`` for a named preset (``tiny``, ``default``, ``full``) with field overrides."""
  return generate(root, config_lib.preset(preset, **overrides), seed, workers=workers,
                  show_progress=show_progress)
