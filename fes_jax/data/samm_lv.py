"""SAMM Long Videos official FACS file (``SAMM_LongVideos_Release.xlsx``) and frame layout.

One sheet (``FACS_Movement_Only``): 9 preamble rows, header on row 10 with Subject, Filename
(``006_1_1`` = subject_video_index), Inducement Code, Onset, Apex, Offset, Duration (a formula,
ignored), Type (``Macro`` / ``Micro - 1/2``), Action Units, Notes. 200 fps; frames in
``SAMM_longvideos/006_1/006_1_0001.jpg``. Most methods resample to ~30 fps: pass
``Policies(fps_divisor=7)`` (SpotFormer) or 8 (ABPN, AUW-GCN); see ``fes_jax.data.policies``.
"""

from __future__ import annotations

import os
import pathlib
import re

from fes_jax.data import frame_counts as frame_counts_lib
from fes_jax.data import spreadsheet as ss
from fes_jax.data.errors import AnnotationError, FrameSourceError
from fes_jax.data.frames import ImageFolder
from fes_jax.data.policies import Policies, RawRow, finalize_rows, parse_number
from fes_jax.data.types import Dataset, ExprType, SourceRef

FPS = 200.0
SHEET = "FACS_Movement_Only"
COLUMNS = ("Subject", "Filename", "Onset", "Apex", "Offset", "Type")
_FILENAME = re.compile(r"^(\d+)_(\d+)_(\d+)$")


def parse_type(value, **where) -> ExprType:
  """``Macro`` -> MaE; ``Micro - 1/2`` (or any ``Micro...``) -> ME."""
  kind = ss.text(value).lower()
  if kind.startswith("macro"):
    return ExprType.MAE
  if kind.startswith("micro"):
    return ExprType.ME
  raise AnnotationError("type must start with 'Macro' or 'Micro'", field="Type", value=value,
                        **where)


def read(xlsx: str | os.PathLike, *, frames_root: str | os.PathLike | None = None,
         frame_counts: str | os.PathLike | dict[str, int] | None = None,
         policies: Policies | None = None) -> Dataset:
  """Reads the SAMM-LV FACS file.

  Args:
    xlsx: ``SAMM_LongVideos_Release.xlsx``.
    frames_root: the ``SAMM_longvideos`` folder (``<video>/<video>_0001.jpg``), optional.
    frame_counts: ``video_frame_counts.txt`` (``006_1 8748``) or a dict, optional.
    policies: quirk policies, including ``fps_divisor``.
  """
  policies = policies or Policies()
  file = pathlib.Path(xlsx)
  sheets = ss.load_sheets(file)
  name = SHEET if SHEET in sheets else next(iter(sheets))
  table = sheets[name]
  header_row, columns = ss.find_header(table, COLUMNS, file=file, sheet=name)
  col = {c: columns[ss.normalise(c)] for c in COLUMNS}
  au_col = columns.get("action units")
  rows: list[RawRow] = []
  for i in range(header_row + 1, len(table)):
    row = table[i]
    if ss.is_blank(row):
      continue
    src = SourceRef(str(file), name, i + 1)
    where = dict(file=file, sheet=name, row=i + 1)
    filename = ss.text(ss.cell(row, col["Filename"]))
    match = _FILENAME.match(filename)
    if not match:
      raise AnnotationError("Filename must look like '006_1_1'", field="Filename",
                            value=ss.cell(row, col["Filename"]), **where)
    subject = ss.text(ss.cell(row, col["Subject"])).zfill(3)
    if subject != match.group(1).zfill(3):
      raise AnnotationError(f"Subject {subject!r} does not match Filename {filename!r}",
                            field="Subject", **where)
    rows.append(RawRow(
        subject=subject, video=f"{match.group(1)}_{match.group(2)}",
        onset=parse_number(ss.cell(row, col["Onset"]), source=src, field="Onset"),
        apex=parse_number(ss.cell(row, col["Apex"]), source=src, field="Apex"),
        offset=parse_number(ss.cell(row, col["Offset"]), source=src, field="Offset"),
        type=parse_type(ss.cell(row, col["Type"]), **where), source=src,
        aus=ss.text(ss.cell(row, au_col)), label_id=filename))
  if not rows:
    raise AnnotationError("no annotation rows below the header", file=file, sheet=name)
  counts = (frame_counts if isinstance(frame_counts, dict) or frame_counts is None
            else frame_counts_lib.read_frame_counts(frame_counts))
  counts = dict(counts or {})
  sources = {}
  if frames_root is not None:
    for video in sorted({r.video for r in rows} | set(counts)):
      folder = pathlib.Path(frames_root) / video
      if not folder.is_dir():
        raise FrameSourceError(f"frame folder of video {video} does not exist", file=folder)
      sources[video] = ImageFolder(folder)
      counts.setdefault(video, sources[video].last)
  dataset = Dataset("samm_lv", FPS, source=str(file))
  finalize_rows(dataset, rows, policies, frame_counts=counts,
                subject_of=lambda v: v.split("_")[0].zfill(3))
  for video in dataset.videos():
    video.frames = sources.get(video.name)
  return dataset
