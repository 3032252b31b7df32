"""SW-MRO features: sliding-window multi-temporal-resolution optical flow (SpotFormer 3.1).

For a video of N frames and window w (17), the video is padded with floor(w/2) copies of its
first and last frame and window i is centred on frame i. Per window: the first frame's 68
landmarks give the face box (resized to ``face_size``) and the ROIs; for every later frame
s = 2..w, Farneback flow from frame 1 to frame s, head motion from the nose-tip box, then one
(dx, dy) per ROI. Frame 1 gets zeros. Output float32 (N, w, R, 2).

The face crop is a bilinear resampling of the face box at ``face_size`` px (pixel centres
aligned). Flow is computed per facial region crop (brows, mouth, and the nose-tip box), as
Zhao et al.'s code does, and each ROI is cut from its region's flow.

Head motion (``head_motion``):
- ``paper`` (default, Eq. 1): v = plain mean flow of the nose-tip box; the current frame's
  face box is shifted by v (sub-pixel) and the region flows are computed on the aligned crop.
- ``zhao``: Zhao et al.'s loop: v = top-70 % magnitude mean of the trimmed nose box; while
  |v| > 1 px shift the box by round(v) image pixels (at most 3 shifts, carried over to the
  window's later frames), then subtract the remaining v from every ROI vector.
- ``none``: no compensation.

``temporal='adjacent'`` is the paper's Table III baseline: flow between adjacent frames
(s - 1 -> s) instead of frame 1 -> s, with the same boxes and compensation.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Iterator

import numpy as np

from fes_jax.preprocess import flow as flow_lib
from fes_jax.preprocess import rois as rois_lib

HEAD_MOTION = ("paper", "zhao", "none")
TEMPORAL = ("sw_mro", "adjacent")


@dataclasses.dataclass(frozen=True)
class SwMroConfig:
  window: int = 17
  face_size: int = 320
  face_box: str = "casme2"  # 8d box (Zhao's CAS(ME)^2); 'samm' for the 9d box
  roi_set: str = "nodes10"  # SpotFormer's 10 graph nodes; 'zhao15' adds nose sides, eyelids
  reduction: str = "mdmo"  # 'top_magnitude' (Zhao), 'four_bin' (AUW-GCN)
  head_motion: str = "paper"
  temporal: str = "sw_mro"
  flow_method: str = "farneback"  # exact mode; 'dis' is the fast mode (different numbers)
  flow: flow_lib.FarnebackParams = flow_lib.FarnebackParams()

  def __post_init__(self):
    if self.window < 2:
      raise ValueError(f"window must be >= 2, got {self.window}")
    checks = (("face_box", rois_lib.FACE_BOXES), ("roi_set", rois_lib.ROI_SETS),
              ("reduction", flow_lib.REDUCTIONS), ("head_motion", HEAD_MOTION),
              ("temporal", TEMPORAL), ("flow_method", flow_lib.FLOW_METHODS))
    for name, allowed in checks:
      if getattr(self, name) not in allowed:
        raise ValueError(f"sw_mro {name}={getattr(self, name)!r} is not one of {list(allowed)}")

  @property
  def rois(self) -> tuple[rois_lib.Roi, ...]:
    return rois_lib.ROI_SETS[self.roi_set]

  @property
  def num_rois(self) -> int:
    return len(self.rois)


def crop(frame_HxW: np.ndarray, box: tuple[float, float, float], face_size: int,
         region: tuple[float, float, float, float], shift=(0.0, 0.0)) -> np.ndarray:
  """The ``region`` of the face crop, sampled from the image (one warpAffine, no full face).

  ``box`` is the face box (x0, y0, side) in image pixels, ``shift`` an extra image-pixel
  offset of the box; ``region`` is (x0, y0, x1, y1) in face pixels (integers).
  """
  import cv2  # pylint: disable=import-outside-toplevel

  x0, y0, side = box
  inv = side / face_size
  fx0, fy0, fx1, fy1 = (int(v) for v in region)
  m = np.array([[inv, 0.0, x0 + shift[0] + (fx0 + 0.5) * inv - 0.5],
                [0.0, inv, y0 + shift[1] + (fy0 + 0.5) * inv - 0.5]])
  return cv2.warpAffine(frame_HxW, m, (fx1 - fx0, fy1 - fy0),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)


def _slice(flow_HxWx2, region, roi):
  rx0, ry0 = int(region[0]), int(region[1])
  x0, y0, x1, y1 = (int(v) for v in roi)
  return flow_HxWx2[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]


class _Window:
  """Geometry of one window, fixed by its first frame's landmarks."""

  def __init__(self, lm_68x2: np.ndarray, cfg: SwMroConfig):
    self.box = rois_lib.face_box(lm_68x2, cfg.face_box)
    lm_face = rois_lib.to_face(lm_68x2, self.box, cfg.face_size)
    self.regions = rois_lib.region_boxes(lm_face, cfg.face_size)
    self.roi_boxes = rois_lib.roi_boxes(lm_face, cfg.rois, self.regions, cfg.face_size)
    self.used = sorted({r.region for r in cfg.rois})
    self.scale = cfg.face_size / self.box[2]  # face px per image px


def _nose_vector(flow_HxWx2: np.ndarray, mode: str, face_size: int) -> np.ndarray:
  if mode == "paper":
    return flow_HxWx2.reshape(-1, 2).mean(axis=0)
  s = face_size / 256  # Zhao's trim [15:-10, 5:-5] of the nose box, scaled
  t0, t1, l0, l1 = int(15 * s), int(10 * s), int(5 * s), int(5 * s)
  h, w = flow_HxWx2.shape[:2]
  sub = flow_HxWx2[t0:max(t0 + 1, h - t1), l0:max(l0 + 1, w - l1)]
  return flow_lib.top_magnitude(sub.reshape(-1, 2).astype(np.float64), rois_lib.NOSE_TIP_TOP_P)


def _flow(prev, nxt, cfg: SwMroConfig) -> np.ndarray:
  return flow_lib.compute_flow(prev, nxt, cfg.flow_method, cfg.flow)


def pair_features(ref_HxW: np.ndarray, cur_HxW: np.ndarray, win: _Window, cfg: SwMroConfig,
                  state: dict) -> np.ndarray:
  """(R, 2) ROI vectors of the flow from ``ref`` to ``cur`` inside one window.

  ``state`` carries Zhao's box shift across the window's frames.
  """
  fs = cfg.face_size
  nose = win.regions["nose_tip"]
  ref_nose = crop(ref_HxW, win.box, fs, nose)
  shift = np.zeros(2)
  residual = np.zeros(2)
  if cfg.head_motion == "paper":
    v = _nose_vector(_flow(ref_nose, crop(cur_HxW, win.box, fs, nose), cfg), "paper", fs)
    shift = v / win.scale
  elif cfg.head_motion == "zhao":
    shift = state.setdefault("shift", np.zeros(2))
    for attempt in range(4):
      f = _flow(ref_nose, crop(cur_HxW, win.box, fs, nose, shift), cfg)
      residual = _nose_vector(f, "zhao", fs)
      if float(residual @ residual) <= 1.0 or attempt == 3:
        break
      shift = shift + np.round(residual / win.scale)
    state["shift"] = shift
  out = np.zeros((cfg.num_rois, 2), np.float32)
  flows = {}
  for name in win.used:
    region = win.regions[name]
    flows[name] = _flow(crop(ref_HxW, win.box, fs, region),
                        crop(cur_HxW, win.box, fs, region, shift), cfg)
  for r, (roi, box) in enumerate(zip(cfg.rois, win.roi_boxes)):
    vec = flow_lib.reduce_flow(_slice(flows[roi.region], win.regions[roi.region], box),
                               cfg.reduction, roi.top_p)
    out[r] = vec - residual
  return out


def window_frame_indices(i: int, n: int, w: int) -> list[int]:
  """0-based frame indices of window i (centred on frame i), edge-padded."""
  h = w // 2
  return [min(max(j, 0), n - 1) for j in range(i - h, i - h + w)]


def extract(frames: Iterable[np.ndarray], landmarks_Nx68x2: np.ndarray, cfg: SwMroConfig,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
  """SW-MRO features (N, w, R, 2) float32 of a video.

  Args:
    frames: the video's N frames in order, grayscale uint8 (H, W) or RGB (converted). Read
      once, streaming: at most w frames are held in memory.
    landmarks_Nx68x2: one set of 68 landmarks per frame (image pixels), computed once per
      frame of the video.
    cfg: the SW-MRO configuration.
    progress: called with 1 after every window.
  """
  n = len(landmarks_Nx68x2)
  if n == 0:
    raise ValueError("video has no frames")
  w, h = cfg.window, cfg.window // 2
  out = np.zeros((n, w, cfg.num_rois, 2), np.float32)
  buffer: dict[int, np.ndarray] = {}
  stream: Iterator[np.ndarray] = iter(frames)
  loaded = 0

  def need(j: int) -> np.ndarray:
    nonlocal loaded
    while loaded <= j:
      try:
        frame = next(stream)
      except StopIteration:
        raise ValueError(f"video has {loaded} frames but {n} landmark rows") from None
      buffer[loaded] = _gray(frame)
      loaded += 1
    return buffer[j]

  for i in range(n):
    idx = window_frame_indices(i, n, w)
    win = _Window(np.asarray(landmarks_Nx68x2[idx[0]], np.float64), cfg)
    state: dict = {}
    for s in range(1, w):
      ref = need(idx[0] if cfg.temporal == "sw_mro" else idx[s - 1])
      out[i, s] = pair_features(ref, need(idx[s]), win, cfg, state)
    for j in [j for j in buffer if j < i + 1 - h]:  # frames no later window starts before
      del buffer[j]
    if progress is not None:
      progress(1)
  if loaded < n:
    need(n - 1)
  if next(stream, None) is not None:
    raise ValueError(f"video has more frames than its {n} landmark rows")
  if not np.isfinite(out).all():
    bad = np.argwhere(~np.isfinite(out))[0]
    raise FloatingPointError(f"non-finite flow at window {bad[0]}, frame {bad[1]} of window")
  return out


def _gray(frame: np.ndarray) -> np.ndarray:
  if frame.ndim == 2:
    return np.ascontiguousarray(frame, np.uint8)
  import cv2  # pylint: disable=import-outside-toplevel

  return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def extract_naive(frames: list[np.ndarray], landmarks_Nx68x2: np.ndarray,
                  cfg: SwMroConfig) -> np.ndarray:
  """The straightforward loop, for benchmarks: full-face crops and full-face Farneback for
  every window and frame (nose box cut from the full-face flow, then a second full-face flow
  on the aligned crop), frames held in memory, one process. ``head_motion='paper'`` only."""
  if cfg.head_motion != "paper" or cfg.temporal != "sw_mro" or cfg.flow_method != "farneback":
    raise ValueError("the naive loop implements the paper's default (exact) mode only")
  n, w = len(landmarks_Nx68x2), cfg.window
  gray = [_gray(f) for f in frames]
  full = (0, 0, cfg.face_size, cfg.face_size)
  out = np.zeros((n, w, cfg.num_rois, 2), np.float32)
  for i in range(n):
    idx = window_frame_indices(i, n, w)
    win = _Window(np.asarray(landmarks_Nx68x2[idx[0]], np.float64), cfg)
    ref = crop(gray[idx[0]], win.box, cfg.face_size, full)
    for s in range(1, w):
      f = flow_lib.farneback(ref, crop(gray[idx[s]], win.box, cfg.face_size, full), cfg.flow)
      v = _nose_vector(_slice(f, full, win.regions["nose_tip"]), "paper", cfg.face_size)
      f = flow_lib.farneback(
          ref, crop(gray[idx[s]], win.box, cfg.face_size, full, v / win.scale), cfg.flow)
      for r, (roi, box) in enumerate(zip(cfg.rois, win.roi_boxes)):
        cut = _slice(f, full, np.clip(box, 0, cfg.face_size))  # full-face flow ends at the crop
        if cut.size:
          out[i, s, r] = flow_lib.reduce_flow(cut, cfg.reduction, roi.top_p)
  return out
