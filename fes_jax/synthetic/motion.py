"""FACS-like action units as landmark displacements, eyelid closure and head pose.

Each action unit (AU) is a table of displacement directions for landmarks on the image-left
half of the face and on the midline, ``index: (inward, down)``; the image-right half is its
mirror (``face.MIRROR_68``). ``au_bases`` turns a table into two per-side ``(68, 2)`` fields,
scaled so that the largest landmark displacement of the whole AU is 1 px: an amplitude of
``a`` then moves the most-moving landmark by exactly ``a`` pixels.
"""

from __future__ import annotations

import numpy as np

from fes_jax.synthetic import face

_Table = dict[int, tuple[float, float]]

AU_TABLES: dict[int, _Table] = {
    1: {21: (0, -1), 20: (0, -.75), 19: (0, -.4), 18: (0, -.15)},  # inner brow raiser
    2: {17: (0, -.8), 18: (0, -1), 19: (0, -.75), 20: (0, -.35), 21: (0, -.1)},  # outer brow
    4: {21: (.45, .9), 20: (.35, .8), 19: (.2, .55), 18: (.1, .3), 17: (0, .15),  # lowerer
        37: (0, .2), 38: (0, .25), 27: (0, .1)},
    5: {37: (0, -1), 38: (0, -1)},  # upper lid raiser
    6: {40: (0, -1), 41: (0, -1), 36: (0, -.35), 39: (0, -.1), 48: (0, -.15)},  # cheek raiser
    7: {40: (0, -1), 41: (0, -1), 37: (0, .35), 38: (0, .35), 36: (.1, 0)},  # lid tightener
    9: {31: (.15, -1), 32: (.05, -.8), 33: (0, -.6), 30: (0, -.35), 29: (0, -.15),  # nose
        50: (0, -.5), 51: (0, -.5), 61: (0, -.4), 62: (0, -.4), 21: (.1, .4), 40: (0, -.25)},
    10: {50: (0, -1), 51: (0, -.9), 49: (0, -.75), 61: (0, -.9), 62: (0, -.85),  # upper lip
         48: (0, -.3), 60: (0, -.4), 31: (0, -.2), 32: (0, -.15)},
    12: {48: (-.8, -.6), 60: (-.75, -.55), 49: (-.35, -.35), 59: (-.35, -.3),  # corner puller
         61: (-.2, -.2), 67: (-.2, -.15), 50: (-.1, -.1), 58: (-.1, -.1), 41: (0, -.15)},
    14: {48: (-.6, 0), 60: (-.55, 0), 49: (-.25, 0), 59: (-.25, 0), 61: (-.1, 0),  # dimpler
         67: (-.1, 0)},
    15: {48: (0, 1), 60: (0, .85), 59: (0, .5), 49: (0, .35), 67: (0, .3), 58: (0, .2)},
    17: {8: (0, -.7), 7: (0, -.6), 6: (0, -.3), 57: (0, -1), 58: (0, -.9), 59: (0, -.6),
         66: (0, -.8), 67: (0, -.7), 51: (0, -.3), 62: (0, -.4)},  # chin raiser
    18: {48: (1, 0), 60: (.9, 0), 49: (.5, 0), 59: (.5, 0), 61: (.3, 0), 67: (.3, 0),  # pucker
         50: (.2, 0), 58: (.2, 0), 51: (0, -.15), 57: (0, .15)},
    20: {48: (-1, .25), 60: (-.9, .2), 49: (-.45, .1), 59: (-.45, .15), 61: (-.25, 0),
         67: (-.25, 0)},  # lip stretcher
    23: {48: (.3, 0), 60: (.3, 0), 50: (0, .4), 51: (0, .45), 61: (0, .2), 62: (0, .2),
         58: (0, -.4), 57: (0, -.45), 67: (0, -.2), 66: (0, -.2)},  # lip tightener
    24: {50: (0, .6), 51: (0, .6), 49: (0, .4), 61: (0, 1), 62: (0, 1), 58: (0, -.6),
         57: (0, -.6), 59: (0, -.4), 67: (0, -1), 66: (0, -1), 48: (.15, 0), 60: (.15, 0)},
    25: {66: (0, 1), 67: (0, .9), 57: (0, .8), 58: (0, .75), 59: (0, .5), 61: (0, -.25),
         62: (0, -.3)},  # lips part
    26: {8: (0, 1), 7: (0, .95), 6: (0, .8), 5: (0, .55), 4: (0, .3), 3: (0, .1), 57: (0, .85),
         58: (0, .8), 59: (0, .6), 66: (0, .85), 67: (0, .8), 48: (0, .2), 60: (0, .25)},
    28: {61: (0, 1), 62: (0, 1), 66: (0, -1), 67: (0, -1), 50: (0, .8), 51: (0, .8),
         57: (0, -.8), 58: (0, -.8), 49: (0, .5), 59: (0, -.5)},  # lip suck
    38: {31: (-1, 0), 32: (-.5, 0)},  # nostril dilator
    39: {31: (1, 0), 32: (.5, 0)},  # nostril compressor
}
CLOSURE_AUS = (43, 45)  # eyes closed, blink: the eyelid-closure field
SUPPORTED_AUS = frozenset(AU_TABLES) | frozenset(CLOSURE_AUS)
UPPER_FACE_AUS = frozenset({1, 2, 4, 5, 6, 7, 9, 43, 45})
_UPPER_LID_SHARE = 0.85  # in a closure the upper lid travels 85% of the gap, the lower 15%
MAX_CLOSURE = 0.95  # eyelids never fully meet, so no triangle of the mesh degenerates


def parse_aus(aus: str) -> tuple[int, ...]:
  """``'4+7'`` -> ``(4, 7)`` (order kept); a bare int string is one AU."""
  return tuple(int(a) for a in str(aus).split("+") if a.strip())


def _table_field(table: _Table, pts_68x2: np.ndarray) -> np.ndarray:
  """The ``(68, 2)`` field of a table: image-left entries plus their mirrors."""
  mid_x = float(np.mean(pts_68x2[list(face.NOSE_BRIDGE), 0]))
  out = np.zeros((68, 2))
  for i, (inward, down) in table.items():
    for j in {i, int(face.MIRROR_68[i])}:
      sign = 1.0 if pts_68x2[j, 0] < mid_x else -1.0
      out[j] = (inward * sign if j != face.MIRROR_68[j] else 0.0, down)
  return out


def closure_field(pts_68x2: np.ndarray) -> np.ndarray:
  """``(68, 2)`` eyelid displacement that closes both eyes completely (lids meet)."""
  out = np.zeros((68, 2))
  for up, low in face.LID_PAIRS:
    gap_2 = pts_68x2[low] - pts_68x2[up]
    out[up] = _UPPER_LID_SHARE * gap_2
    out[low] = -(1.0 - _UPPER_LID_SHARE) * gap_2
  return out


def au_bases(au: int, pts_68x2: np.ndarray, rot_2x2: np.ndarray) -> tuple[np.ndarray, float]:
  """Per-side unit-amplitude fields ``(2, 68, 2)`` of ``au`` and its largest amplitude in px.

  Args:
    au: an AU in ``SUPPORTED_AUS``.
    pts_68x2: the subject's upright neutral landmarks (frame pixels).
    rot_2x2: the subject's in-plane roll; fields are rotated by it.
  Returns:
    ``(bases_2x68x2, max_amp_px)``: side 0 is the image-left half. ``max_amp_px`` is
    ``inf`` except for eyelid closure, where it is ``MAX_CLOSURE`` of the full closure.
  """
  if au in CLOSURE_AUS:
    field = closure_field(pts_68x2)
  else:
    field = _table_field(AU_TABLES[au], pts_68x2)
  scale = float(np.linalg.norm(field, axis=1).max())
  field = field / scale @ rot_2x2.T
  sides_68x2 = face.side_weights(pts_68x2)
  bases = np.stack([field * sides_68x2[:, k:k + 1] for k in range(2)])
  return bases, (MAX_CLOSURE * scale if au in CLOSURE_AUS else float("inf"))


def pose_matrix(roll: float, log_scale: float) -> np.ndarray:
  """The 2x2 scaled rotation of a head pose."""
  s = np.exp(log_scale)
  c, n = np.cos(roll), np.sin(roll)
  return s * np.array([[c, -n], [n, c]])


def apply_pose(pts_NxVx2: np.ndarray, depth_V: np.ndarray, center_2: np.ndarray,
               face_h: float, rot_2x2: np.ndarray, pose_Nx6: np.ndarray) -> np.ndarray:
  """Moves face vertices by head poses ``(tx, ty, roll, log_scale, yaw, pitch)`` per frame.

  Yaw and pitch (radians) are pseudo-3D: a vertex shifts by ``angle * depth * face_h`` along
  the face's own x / y axis (``rot_2x2`` is the subject's base roll). Then the similarity
  ``center + s R(roll) (p - center) + t`` is applied.
  """
  pose = np.asarray(pose_Nx6, np.float64)
  turn_Nx2 = pose[:, 4:6] @ rot_2x2.T
  p = pts_NxVx2 + depth_V[None, :, None] * face_h * turn_Nx2[:, None, :]
  s = np.exp(pose[:, 3])
  c, n = s * np.cos(pose[:, 2]), s * np.sin(pose[:, 2])
  a_Nx2x2 = np.stack([np.stack([c, -n], -1), np.stack([n, c], -1)], -2)
  return center_2 + np.einsum("nvd,ned->nve", p - center_2, a_Nx2x2) + pose[:, None, :2]
