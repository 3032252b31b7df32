"""Spotting in one user video, end to end: frames -> landmarks -> SW-MRO -> model -> intervals.

``spot_video(video, checkpoint, out)`` uses the run's own settings throughout: the
``preprocess`` section for SW-MRO, the ``model`` section for the network, the ``eval`` section
for post-processing. It writes into ``out``:

- ``intervals.csv``: MEGC ``vid,onset,offset,type``, frames 1-based (a video file's frames
  1..N in decoding order; a frame folder's own file numbers);
- ``probabilities.png``: apex and expression probabilities per type with the intervals (the
  report's per-video plot, without ground truth);
- ``probabilities.npz``: ``probs`` (N, 10) (channels: fes_jax.eval.postprocess.CHANNELS),
  ``frame_numbers`` (N,), ``channels``;
- ``landmarks.npy``: the (N, 68, 2) landmarks used (``--landmarks=<out>/landmarks.npy``
  reruns without dlib);
- ``summary.json``: the video (frames, fps), the checkpoint and epoch, landmark report,
  interval counts and the intervals, seconds per step.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import types
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from fes_jax.data.frames import open_frames
from fes_jax.eval import postprocess, submission
from fes_jax.eval.megc import Span
from fes_jax.spot import features as features_lib
from fes_jax.spot import model as model_lib

BATCH_WINDOWS = 256  # inference batch; the last batch is padded (one compiled shape)
CHANNEL_NAMES = tuple(sorted(((c, f"{t}_{k}") for t, ch in postprocess.CHANNELS.items()
                             for k, c in ch.items())))  # (channel, name) pairs, in order


def default_out_dir(video: str | os.PathLike) -> pathlib.Path:
  """``<video's folder>/<video stem>_spots`` (a frame folder: ``<folder>_spots`` beside it)."""
  path = pathlib.Path(video).expanduser().absolute()
  stem = path.name if path.is_dir() else path.stem
  return path.parent / f"{stem}_spots"


def video_name(video: str | os.PathLike) -> str:
  path = pathlib.Path(video).expanduser().absolute()
  return path.name if path.is_dir() else path.stem


def _bar(total: int, desc: str, unit: str, enabled: bool):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def predict(restored: model_lib.Restored, features_NxWxRx2: np.ndarray, *,
            batch: int = BATCH_WINDOWS, progress: bool = False) -> np.ndarray:
  """Per-window probabilities ``(N, 10)`` in eval mode, in padded batches of ``batch``."""
  x = np.asarray(features_NxWxRx2, np.float32)
  if x.shape[1] != restored.seq_len:
    raise ValueError(f"features have {x.shape[1]}-frame windows, the model {restored.seq_len}")
  if x.shape[2] < restored.num_nodes:
    raise ValueError(f"features have {x.shape[2]} ROIs, the model needs {restored.num_nodes}")
  x = x[:, :, :restored.num_nodes]  # the ROI sets list SpotFormer's 10 graph nodes first
  n = len(x)
  size = min(batch, n)
  fn = restored.predict_fn()
  out = []
  with _bar(n, "inference", "window", progress) as bar:
    for start in range(0, n, size):
      chunk = x[start:start + size]
      pad = size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.float32)])
      out.append(fn(chunk)[:size - pad])
      bar.update(size - pad)
  return np.concatenate(out).astype(np.float32)


def spot_probabilities(probs_Nx10: np.ndarray, frame_numbers_N: np.ndarray, name: str,
                       eval_cfg: Any) -> list[Span]:
  """Intervals of both types, post-processed with the run's ``eval`` section."""
  from fes_jax.eval.spotting import postprocess_config  # pylint: disable=import-outside-toplevel

  return postprocess.spot_video(probs_Nx10, np.asarray(frame_numbers_N), name,
                                postprocess_config(eval_cfg))


def _training_fps(config_path: pathlib.Path) -> float | None:
  summary = config_path.parent / "data_summary.json"
  try:
    fps = json.loads(summary.read_text()).get("fps")
  except (OSError, ValueError):
    return None
  return float(fps) if isinstance(fps, (int, float)) else None


def spot_video(video_path: str | os.PathLike, checkpoint_dir: str | os.PathLike,
               out_dir: str | os.PathLike | None = None, *,
               config: str | os.PathLike | None = None, epoch: int | None = None,
               landmarks: str = "dlib", fps: float | None = None, workers: int = 1,
               progress: bool = True) -> dict[str, Any]:
  """Spots expressions in a video file or numbered frame folder; writes ``out_dir``.

  Args:
    video_path: a video file (OpenCV) or a folder of numbered images.
    checkpoint_dir: a fold directory (``<workdir>/folds/fold_XXX``), its ``checkpoints/``, or
      one epoch's checkpoint directory.
    out_dir: default :func:`default_out_dir`.
    config: the run's config (``config.json`` or ``configs/x.py[:args]``); default: the
      ``config.json`` of the workdir above ``checkpoint_dir``.
    epoch: default: the fold's selected epoch, else the newest checkpoint.
    landmarks: 'dlib', or a landmark file (``.npy`` (N, 68, 2) / OpenFace ``.csv``).
    fps: frame rate of a frame folder (default: a video file's own rate; unknown for a
      folder); recorded, and compared with the training videos' rate.
    workers: processes for the SW-MRO features.
    progress: tqdm bars for landmarks, flow and inference.

  Returns:
    The summary written to ``summary.json``.
  """
  start = time.perf_counter()
  timing: dict[str, float] = {}
  run = model_lib.find_run(checkpoint_dir, config)
  cfg: ml_collections.ConfigDict = model_lib.load_config(run.config_path)
  source = open_frames(video_path)  # errors name the file: missing, unreadable, empty
  name = video_name(video_path)
  n = len(source)
  video_fps = fps or getattr(source, "fps", None)
  out = pathlib.Path(out_dir) if out_dir is not None else default_out_dir(video_path)

  t = time.perf_counter()
  restored = model_lib.load(run, cfg, epoch)
  timing["restore_s"] = time.perf_counter() - t

  from fes_jax import stages  # pylint: disable=import-outside-toplevel

  sw_cfg = stages.sw_mro_config(types.SimpleNamespace(config=cfg))  # a Context's view
  if sw_cfg.window != restored.seq_len:
    raise ValueError(f"the config's preprocess.window {sw_cfg.window} differs from the model's "
                     f"seq_len {restored.seq_len}")

  t = time.perf_counter()
  with _bar(n, "landmarks", "frame", progress and landmarks == "dlib") as bar:
    lms = features_lib.landmarks(source, landmarks, progress=bar.update)
  timing["landmarks_s"] = time.perf_counter() - t

  t = time.perf_counter()
  with _bar(n, "SW-MRO flow", "window", progress) as bar:
    feats = features_lib.sw_mro_features(source.path, lms.points, sw_cfg, workers=workers,
                                         progress=bar.update)
  timing["flow_s"] = time.perf_counter() - t

  t = time.perf_counter()
  probs = predict(restored, feats, progress=progress)
  timing["inference_s"] = time.perf_counter() - t

  frames = np.asarray(source.frame_numbers, np.int32)
  spans = spot_probabilities(probs, frames, name, cfg.eval)
  t = time.perf_counter()
  write_outputs(out, name, probs, frames, lms.points, spans)
  timing["write_s"] = time.perf_counter() - t
  timing["total_s"] = time.perf_counter() - start

  summary = _summary(video_path, name, frames, video_fps, run, restored, lms, spans, timing,
                     out)
  _write_json(out / "summary.json", summary)
  return summary


def _summary(video_path, name: str, frames: np.ndarray, video_fps: float | None,
             run: model_lib.Run, restored: model_lib.Restored, lms: Any, spans: list[Span],
             timing: dict[str, float], out: pathlib.Path) -> dict[str, Any]:
  """What ``summary.json`` holds (and the warnings, also logged)."""
  n = len(frames)
  warnings = []
  trained_fps = _training_fps(run.config_path)
  if video_fps and trained_fps and abs(video_fps / trained_fps - 1) > 0.25:
    warnings.append(f"the video runs at {video_fps:.1f} fps but the model was trained on "
                    f"{trained_fps:.1f} fps videos: expression durations in frames differ")
  if lms.missing:
    warnings.append(f"{lms.missing} of {n} frames had no face (landmarks carried over)")
  for w in warnings:
    logging.warning("%s: %s", name, w)
  return {
      "video": str(pathlib.Path(video_path).expanduser().absolute()), "vid": name,
      "frames": n, "first_frame": int(frames[0]), "last_frame": int(frames[-1]),
      "fps": video_fps, "duration_s": round(n / video_fps, 3) if video_fps else None,
      "checkpoint": str(run.checkpoints), "epoch": restored.epoch,
      "epoch_source": restored.source, "config": str(run.config_path),
      "model": restored.model_name, "landmarks": lms.report(),
      "counts": {"mae": sum(s.type == "mae" for s in spans),
                 "me": sum(s.type == "me" for s in spans), "total": len(spans)},
      "intervals": [{"onset": s.onset, "offset": s.offset, "type": s.type,
                     "score": round(s.score, 6)} for s in spans],
      "seconds": {k: round(v, 2) for k, v in timing.items()},
      "frames_per_s": round(n / timing["total_s"], 2), "warnings": warnings,
      "outputs": {k: str(out / k) for k in ("intervals.csv", "probabilities.png",
                                             "probabilities.npz", "landmarks.npy",
                                             "summary.json")},
  }


def write_outputs(out: pathlib.Path, name: str, probs_Nx10: np.ndarray, frames_N: np.ndarray,
                  points_Nx68x2: np.ndarray, spans: list[Span]) -> None:
  from fes_jax.eval import report  # pylint: disable=import-outside-toplevel

  out.mkdir(parents=True, exist_ok=True)
  submission.write_csv(out / "intervals.csv", spans)
  tmp = out / f".probabilities.tmp{os.getpid()}.npz"
  np.savez(tmp, probs=probs_Nx10, frame_numbers=frames_N,
           channels=np.asarray([n for _, n in CHANNEL_NAMES]))
  os.replace(tmp, out / "probabilities.npz")
  tmp = out / f".landmarks.tmp{os.getpid()}.npy"
  np.save(tmp, np.asarray(points_Nx68x2, np.float32))
  os.replace(tmp, out / "landmarks.npy")
  report.plot_video(out / "probabilities.png", probs_Nx10, frames_N, [], spans, name,
                    note=f"black bars = spotted intervals ({len(spans)})")


def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  os.replace(tmp, path)
