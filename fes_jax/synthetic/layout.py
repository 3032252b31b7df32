"""The on-disk layout of CAS(ME)^2, reproduced for synthetic data.

``<root>/rawpic/s15/15_0401girlcrashing/img1.jpg ...`` (1-based, unpadded), the 3-sheet coding
file ``<root>/CAS(ME)^2code_final.xlsx`` and ``<root>/video_frame_counts.txt`` (``s15_0401
1200``). The generator adds ``<root>/landmarks/s15/15_0401girlcrashing.npy`` (float32
``(num_frames, 68, 2)``, x/y pixels, row i = frame i+1) and ``<root>/synthetic_manifest.json``.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Iterable, Sequence

# Participant number (1..22) -> subject folder number, as in the real ``naming rule1`` sheet.
FOLDER_NUMBERS = (15, 16, 19, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 31, 32, 33, 34, 35, 36,
                  37, 38, 40)
# Video code -> (clip stem, raw folder suffix), as in ``naming rule2`` and the real rawpic.
VIDEO_CODES = {
    "0101": ("disgust1", "disgustingteeth"), "0102": ("disgust2", "eatingworms"),
    "0401": ("anger1", "girlcrashing"), "0402": ("anger2", "beatingpregnantwoman"),
    "0502": ("happy1", "funnyerrors"), "0503": ("happy2", "unnyfarting"),
    "0505": ("happy3", "funnyinnovations"), "0507": ("happy4", "climbingthewall"),
    "0508": ("happy5", "funnydunkey"),
}
XLSX_NAME = "CAS(ME)^2code_final.xlsx"
COUNTS_NAME = "video_frame_counts.txt"
MANIFEST_NAME = "synthetic_manifest.json"
TYPE_NAMES = {"mae": "macro-expression", "me": "micro-expression"}


def subject_folder(participant: int) -> str:
  """Participant 1 -> ``'s15'``."""
  return f"s{FOLDER_NUMBERS[participant - 1]}"


def video_name(participant: int, code: str) -> str:
  """``'s15_0401'``: the name the reader gives the video and the frame-count file uses."""
  return f"{subject_folder(participant)}_{code}"


def video_folder(participant: int, code: str) -> str:
  """``'15_0401girlcrashing'``."""
  return f"{FOLDER_NUMBERS[participant - 1]}_{code}{VIDEO_CODES[code][1]}"


def frames_dir(root: pathlib.Path, participant: int, code: str) -> pathlib.Path:
  return root / "rawpic" / subject_folder(participant) / video_folder(participant, code)


def landmarks_path(root: pathlib.Path, participant: int, code: str) -> pathlib.Path:
  name = video_folder(participant, code) + ".npy"
  return root / "landmarks" / subject_folder(participant) / name


def frame_file(index_1based: int) -> str:
  return f"img{index_1based}.jpg"


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
  """Writes ``data`` to a temporary file next to ``path`` and renames it into place."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; the dataset is meant to be shared
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def au_cell(aus: Sequence[int]) -> int | str:
  """AU list -> cell value: a bare int for one AU (as the real file often has), else ``4+7``."""
  return int(aus[0]) if len(aus) == 1 else "+".join(str(a) for a in aus)


def write_xlsx(path: pathlib.Path, rows: Iterable[tuple]) -> None:
  """Writes the 3-sheet CAS(ME)^2 coding workbook atomically.

  Args:
    rows: ``(participant, stem, n, onset, apex, offset, aus, est_emotion, type, self_emotion)``
      with ``n`` the 1-based index of the interval within its video and ``type`` ``mae``/``me``.
      Rows are written sorted by participant, clip name and n, like the real file.
  """
  import io  # pylint: disable=g-import-not-at-top
  import openpyxl  # pylint: disable=g-import-not-at-top

  rows = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
  wb = openpyxl.Workbook()
  code_ws = wb.active
  code_ws.title = "CASFEcode_final"
  rule1 = wb.create_sheet("naming rule1")
  rule2 = wb.create_sheet("naming rule2")
  for part, stem, n, onset, apex, offset, aus, est, typ, self_em in rows:
    code_ws.append([int(part), f"{stem}_{n}", int(onset), int(apex), int(offset), au_cell(aus),
                    est, TYPE_NAMES[typ], self_em])
    rule1.append([FOLDER_NUMBERS[part - 1], subject_folder(part), int(part)])
  for code, (stem, _) in VIDEO_CODES.items():
    rule2.append([code, stem])
  buf = io.BytesIO()
  wb.save(buf)
  atomic_write_bytes(path, buf.getvalue())


def write_frame_counts(path: pathlib.Path, counts: dict[str, int]) -> None:
  """``s15_0401 1200`` per line, sorted by video name, written atomically."""
  text = "".join(f"{name} {n}\n" for name, n in sorted(counts.items()))
  atomic_write_bytes(path, text.encode())
