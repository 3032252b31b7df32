"""CAS(ME)^3 part A labels: the official xls/xlsx label file, or the filtered CSV export.

Official label file (first sheet, header on row 1): Subject (``spNO.1``), Filename (``a`` ..
``m``), Onset, Apex, Offset, AU, Objective class, emotion, and in v2 an ``Expression type``
column. Frames: ``part_A/<Subject>/<Filename>/color/<N>.jpg``, unpadded, not starting at 1,
with gaps; annotation frame numbers are these file numbers. 30 fps.

The third-party export (``cas3_annotations_filtered_export.csv``, LGSNet) has columns
``subject,video,type,type_idx,startFrame,endFrame,frame_num,length``: no apex (handled by the
``missing_apex`` policy) and the video's frame count in ``frame_num``; ``video`` is a path whose
last component is the clip letter.

Without an ``Expression type`` column the type comes from ``type_when_missing``: ``duration``
(default: ME when the interval lasts at most 15 frames = 0.5 s at 30 fps, the MEGC definition,
else MaE; counted as ``type_from_duration``), ``me`` or ``mae`` (counted as
``type_assumed``).
"""

from __future__ import annotations

import os
import pathlib

from fes_jax.data import spreadsheet as ss
from fes_jax.data.errors import AnnotationError, FrameSourceError
from fes_jax.data.frames import ImageFolder
from fes_jax.data.policies import Policies, RawRow, finalize_rows, parse_number
from fes_jax.data.types import Dataset, ExprType, SourceRef

FPS = 30.0
LABEL_COLUMNS = ("Subject", "Filename", "Onset", "Apex", "Offset")
EXPORT_COLUMNS = ("subject", "video", "type", "startFrame", "endFrame")
ME_MAX_FRAMES = 15  # 0.5 s at 30 fps
TYPE_WHEN_MISSING = ("duration", "me", "mae")


def _type(value, **where) -> ExprType | None:
  kind = ss.normalise(value).replace("-", " ")
  if not kind:
    return None
  if kind.startswith("micro") or kind == "me":
    return ExprType.ME
  if kind.startswith("macro") or kind == "mae":
    return ExprType.MAE
  raise AnnotationError("expression type must be micro/macro (or me/mae)", value=value,
                        **where)


def read(path: str | os.PathLike, *, frames_root: str | os.PathLike | None = None,
         policies: Policies | None = None, type_when_missing: str = "duration") -> Dataset:
  """Reads a CAS(ME)^3 part A label file (.xlsx/.xls) or the filtered CSV export.

  Args:
    path: the label file.
    frames_root: the ``part_A`` folder (``<Subject>/<Filename>/color/<N>.jpg``), optional.
    policies: quirk policies.
    type_when_missing: how to type rows without an expression type (see module docstring).
  """
  if type_when_missing not in TYPE_WHEN_MISSING:
    raise ValueError(f"type_when_missing must be one of {TYPE_WHEN_MISSING}")
  policies = policies or Policies()
  file = pathlib.Path(path)
  counts: dict[str, int] = {}
  dataset = Dataset("casme3", FPS, source=str(file))
  if file.suffix.lower() == ".csv":
    rows = _read_export(file, counts)
  else:
    rows = _read_labels(file)
  for row in rows:
    if row.type is None:
      if type_when_missing == "duration":
        if row.offset in (None, 0):
          raise AnnotationError("no expression type and no offset to type it by duration",
                                file=file, sheet=row.source.sheet, row=row.source.row,
                                field="Offset")
        row.type = ExprType.ME if row.offset - row.onset + 1 <= ME_MAX_FRAMES else ExprType.MAE
        dataset.quirks["type_from_duration"] += 1
      else:
        row.type = ExprType(type_when_missing)
        dataset.quirks["type_assumed"] += 1
  sources = {}
  if frames_root is not None:
    for row in rows:
      if row.video not in sources:
        folder = pathlib.Path(frames_root) / row.subject / row.video.split("/", 1)[1] / "color"
        if not folder.is_dir():
          raise FrameSourceError(f"frame folder of {row.video} does not exist", file=folder)
        sources[row.video] = ImageFolder(folder)
        counts.setdefault(row.video, sources[row.video].last)
  finalize_rows(dataset, rows, policies, frame_counts=counts)
  for video in dataset.videos():
    video.frames = sources.get(video.name)
  return dataset


def _read_labels(file: pathlib.Path) -> list[RawRow]:
  sheets = ss.load_sheets(file)
  name = next(iter(sheets))
  table = sheets[name]
  header_row, columns = ss.find_header(table, LABEL_COLUMNS, file=file, sheet=name)
  col = {c: columns[ss.normalise(c)] for c in LABEL_COLUMNS}
  type_col = columns.get("expression type")
  rows = []
  for i in range(header_row + 1, len(table)):
    row = table[i]
    if ss.is_blank(row):
      continue
    src = SourceRef(str(file), name, i + 1)
    where = dict(file=file, sheet=name, row=i + 1)
    subject = ss.text(ss.cell(row, col["Subject"]))
    clip = ss.text(ss.cell(row, col["Filename"]))
    if not subject or not clip:
      raise AnnotationError("Subject and Filename must not be empty", field="Filename", **where)
    rows.append(RawRow(
        subject=subject, video=f"{subject}/{clip}",
        onset=parse_number(ss.cell(row, col["Onset"]), source=src, field="Onset"),
        apex=parse_number(ss.cell(row, col["Apex"]), source=src, field="Apex"),
        offset=parse_number(ss.cell(row, col["Offset"]), source=src, field="Offset"),
        type=_type(ss.cell(row, type_col), field="Expression type", **where),
        source=src, aus=ss.text(ss.cell(row, columns.get("au"))),
        emotion=ss.text(ss.cell(row, columns.get("emotion"))) or None,
        extra=(("objective_class", ss.text(ss.cell(row, columns.get("objective class"))) or None),)))
  if not rows:
    raise AnnotationError("no annotation rows below the header", file=file, sheet=name)
  return rows


def _read_export(file: pathlib.Path, counts: dict[str, int]) -> list[RawRow]:
  header, table = ss.load_csv(file)
  _, columns = ss.find_header([tuple(header)], EXPORT_COLUMNS, file=file, sheet=None)
  rows = []
  for i, row in enumerate(table, 2):
    if ss.is_blank(row):
      continue
    src = SourceRef(str(file), None, i)
    where = dict(file=file, row=i)
    subject = ss.text(ss.cell(row, columns["subject"]))
    clip = pathlib.PurePosixPath(ss.text(ss.cell(row, columns["video"]))).name
    if not subject or not clip:
      raise AnnotationError("subject and video must not be empty", field="video", **where)
    video = f"{subject}/{clip}"
    frames = parse_number(ss.cell(row, columns.get("frame num")), source=src, field="frame_num")
    if frames is not None:
      counts[video] = int(frames)
    rows.append(RawRow(
        subject=subject, video=video,
        onset=parse_number(ss.cell(row, columns["startframe"]), source=src, field="startFrame"),
        apex=None,
        offset=parse_number(ss.cell(row, columns["endframe"]), source=src, field="endFrame"),
        type=_type(ss.cell(row, columns["type"]), field="type", **where), source=src))
  if not rows:
    raise AnnotationError("no annotation rows", file=file)
  return rows
