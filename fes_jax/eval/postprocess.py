"""Frame probabilities -> expression intervals (../shared/reference/spotformer.md section 5).

Per video and type: every frame whose apex probability exceeds ``apex_threshold`` is an apex
candidate l; the onset is the frame of highest onset probability in [l - far, l - near], the
offset the frame of highest offset probability in [l + near, l + far] (windows clipped to the
video). SpotFormer's code searches ``near..far`` = 2..8 frames for ME and 8..29 for MaE (the
paper: k/2 = 8, j/2 = 2 for ME; 30 and 8 for MaE), and keeps a proposal only when the onset
probability beats the offset probability at the onset frame and the reverse at the offset frame
(``require_order``). Score = p_onset x p_apex x p_offset; then NMS per video and type
(suppress IoU > ``nms_iou``, exclusive lengths) and the ``top_k`` best per video and type.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fes_jax.eval.megc import Span, iou

# Output channels of the spotting models (fes_jax.losses).
CHANNELS = {"me": {"onset": 0, "offset": 1, "none": 2, "apex": 6, "expr": 8},
            "mae": {"onset": 3, "offset": 4, "none": 5, "apex": 7, "expr": 9}}


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
  apex_threshold: float = 0.5
  me_search: tuple[int, int] = (2, 8)  # (near, far) frames from the apex, code's values
  mae_search: tuple[int, int] = (8, 29)
  require_order: bool = True
  nms_iou: float = 0.5
  top_k: int = 5  # per video and type; 0 keeps all


def probabilities(logits_Nx10: np.ndarray) -> np.ndarray:
  """Logits -> per-frame probabilities in the same 10 channels (softmax over each 3-class
  onset/offset/none group, sigmoid for apex and expression)."""
  x = np.asarray(logits_Nx10, np.float64)
  out = np.empty_like(x)
  for t in ("me", "mae"):
    c = CHANNELS[t]
    group = x[:, [c["onset"], c["offset"], c["none"]]]
    e = np.exp(group - group.max(1, keepdims=True))
    out[:, [c["onset"], c["offset"], c["none"]]] = e / e.sum(1, keepdims=True)
    for k in ("apex", "expr"):
      out[:, c[k]] = 1 / (1 + np.exp(-x[:, c[k]]))
  return out.astype(np.float32)


def proposals(prob_Nx10: np.ndarray, frame_numbers: np.ndarray, video: str, kind: str,
              cfg: PostprocessConfig = PostprocessConfig()) -> list[Span]:
  """Intervals of one type in one video, before NMS. ``frame_numbers`` (N,) label the rows."""
  c = CHANNELS[kind]
  near, far = cfg.me_search if kind == "me" else cfg.mae_search
  n = len(prob_Nx10)
  p_on, p_off, p_apex = prob_Nx10[:, c["onset"]], prob_Nx10[:, c["offset"]], prob_Nx10[:, c["apex"]]
  out = []
  for l in np.flatnonzero(p_apex > cfg.apex_threshold):
    lo, hi = max(0, l - far), l - near
    a, b = l + near, min(n - 1, l + far)
    if hi < lo or b < a:
      continue
    on = lo + int(np.argmax(p_on[lo:hi + 1]))
    off = a + int(np.argmax(p_off[a:b + 1]))
    if cfg.require_order and not (p_on[on] > p_off[on] and p_off[off] > p_on[off]):
      continue
    out.append(Span(video, int(frame_numbers[on]), int(frame_numbers[off]), kind,
                    float(p_on[on] * p_apex[l] * p_off[off])))
  return out


def nms(spans: list[Span], iou_threshold: float, top_k: int) -> list[Span]:
  """Greedy NMS by score (ties: earlier onset first); then the ``top_k`` best."""
  kept: list[Span] = []
  for s in sorted(spans, key=lambda s: (-s.score, s.onset, s.offset)):
    if all(iou(s, k) <= iou_threshold for k in kept):
      kept.append(s)
    if top_k and len(kept) == top_k:
      break
  return sorted(kept, key=lambda s: (s.onset, s.offset))


def spot_video(prob_Nx10: np.ndarray, frame_numbers: np.ndarray, video: str,
               cfg: PostprocessConfig = PostprocessConfig()) -> list[Span]:
  """Both types' final intervals for one video."""
  out = []
  for kind in ("mae", "me"):
    out += nms(proposals(prob_Nx10, frame_numbers, video, kind, cfg), cfg.nms_iou, cfg.top_k)
  return out
