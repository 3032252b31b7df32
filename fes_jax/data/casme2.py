"""CAS(ME)^2 official coding file (``CAS(ME)^2code_final.xlsx``) and raw frame layout.

Sheet ``CASFEcode_final`` has no header; columns: participant (1-22), clip
``<stem>_<n>`` (e.g. ``anger1_1``), onset, apex, offset, AUs, estimated emotion, type
(``macro-expression`` / ``micro-expression``), self-reported emotion. Sheet ``naming rule1``
maps participant -> subject folder (``15, 's15', 1``); sheet ``naming rule2`` maps the video
code to the clip stem (``0401 -> anger1``; codes stored as ints are zero-padded to 4 digits).
Participant 1's ``anger1_1`` is therefore video ``s15_0401``, frames in
``rawpic/s15/15_0401<name>/img1.jpg, img2.jpg, ...`` (1-based, 30 fps).
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

FPS = 30.0
CODE_SHEET = "CASFEcode_final"
RULE1_SHEET = "naming rule1"
RULE2_SHEET = "naming rule2"
TYPES = {"macro-expression": ExprType.MAE, "micro-expression": ExprType.ME}
_CLIP = re.compile(r"^([A-Za-z]+\d*)_(\d+)$")


def _participant_folders(rows, file) -> dict[int, str]:
  folders: dict[int, str] = {}
  for i, row in enumerate(rows, 1):
    if ss.is_blank(row):
      continue
    src = dict(file=file, sheet=RULE1_SHEET, row=i)
    folder = ss.text(ss.cell(row, 1))
    participant = parse_number(ss.cell(row, 2), source=SourceRef(str(file), RULE1_SHEET, i),
                               field="participant")
    if not re.fullmatch(r"s\d+", folder):
      raise AnnotationError("subject folder must look like 's15'", field="folder",
                            value=ss.cell(row, 1), **src)
    if participant is None or not participant.is_integer():
      raise AnnotationError("participant must be an integer", field="participant",
                            value=ss.cell(row, 2), **src)
    p = int(participant)
    if folders.get(p, folder) != folder:
      raise AnnotationError(f"participant {p} mapped to both {folders[p]!r} and {folder!r}",
                            field="folder", **src)
    folders[p] = folder
  return folders


def _stem_codes(rows, file) -> dict[str, str]:
  codes: dict[str, str] = {}
  for i, row in enumerate(rows, 1):
    if ss.is_blank(row):
      continue
    code, stem = ss.text(ss.cell(row, 0)), ss.text(ss.cell(row, 1))
    if not code.isdigit():
      raise AnnotationError("video code must be digits like 0401", file=file, sheet=RULE2_SHEET,
                            row=i, field="code", value=ss.cell(row, 0))
    if not stem:
      raise AnnotationError("clip stem is empty", file=file, sheet=RULE2_SHEET, row=i,
                            field="stem")
    codes[stem.lower()] = code.zfill(4)
  return codes


def read(xlsx: str | os.PathLike, *, frames_root: str | os.PathLike | None = None,
         frame_counts: str | os.PathLike | dict[str, int] | None = None,
         policies: Policies | None = None) -> Dataset:
  """Reads the CAS(ME)^2 coding file.

  Args:
    xlsx: ``CAS(ME)^2code_final.xlsx``.
    frames_root: the ``rawpic`` folder; when given, every video gets its ``ImageFolder`` and
      its frame count (a missing or empty video folder is an error naming it).
    frame_counts: ``video_frame_counts.txt`` (or a dict); lists videos without annotations too
      and enables the ``beyond_end`` policy.
    policies: quirk policies (``fes_jax.data.policies``).
  """
  policies = policies or Policies()
  file = pathlib.Path(xlsx)
  sheets = ss.load_sheets(file)
  folders = _participant_folders(ss.sheet(sheets, RULE1_SHEET, file=file), file)
  codes = _stem_codes(ss.sheet(sheets, RULE2_SHEET, file=file), file)
  rows: list[RawRow] = []
  for i, row in enumerate(ss.sheet(sheets, CODE_SHEET, file=file), 1):
    if ss.is_blank(row):
      continue
    src = SourceRef(str(file), CODE_SHEET, i)
    where = dict(file=file, sheet=CODE_SHEET, row=i)
    if len(row) < 8:
      raise AnnotationError(f"expected at least 8 columns, found {len(row)}", **where)
    participant = parse_number(row[0], source=src, field="participant")
    if participant is None or not participant.is_integer() or int(participant) not in folders:
      raise AnnotationError(f"participant not in sheet {RULE1_SHEET!r}", field="participant",
                            value=row[0], **where)
    clip = ss.text(row[1])
    match = _CLIP.match(clip)
    if not match:
      raise AnnotationError("clip name must look like 'anger1_1'", field="clip", value=row[1],
                            **where)
    stem = match.group(1).lower()
    if stem not in codes:
      raise AnnotationError(f"clip stem {stem!r} not in sheet {RULE2_SHEET!r}", field="clip",
                            value=row[1], **where)
    kind = ss.text(row[7]).lower()
    if kind not in TYPES:
      raise AnnotationError(f"type must be one of {sorted(TYPES)}", field="type", value=row[7],
                            **where)
    folder = folders[int(participant)]
    rows.append(RawRow(
        subject=folder, video=f"{folder}_{codes[stem]}",
        onset=parse_number(row[2], source=src, field="onset"),
        apex=parse_number(row[3], source=src, field="apex"),
        offset=parse_number(row[4], source=src, field="offset"),
        type=TYPES[kind], source=src, aus=ss.text(row[5]),
        emotion=ss.text(row[6]) or None, label_id=clip,
        extra=(("self_reported_emotion", ss.text(ss.cell(row, 8)) or None),)))
  if not rows:
    raise AnnotationError("no annotation rows", file=file, sheet=CODE_SHEET)
  counts = (frame_counts if isinstance(frame_counts, dict) or frame_counts is None
            else frame_counts_lib.read_frame_counts(frame_counts))
  counts = dict(counts or {})
  if frames_root is not None:
    sources = {name: _video_folder(frames_root, name) for name in
               sorted({r.video for r in rows} | set(counts))}
    for name, src in sources.items():
      counts.setdefault(name, src.last)
  dataset = Dataset("casme2", FPS, source=str(file))
  finalize_rows(dataset, rows, policies, frame_counts=counts,
                subject_of=lambda name: name.split("_")[0])
  if frames_root is not None:
    for video in dataset.videos():
      video.frames = sources[video.name]
  return dataset


def _video_folder(frames_root: str | os.PathLike, video: str) -> ImageFolder:
  """``rawpic/s15/15_0401*`` for video ``s15_0401``."""
  subject, code = video.split("_", 1)
  subject_dir = pathlib.Path(frames_root) / subject
  prefix = f"{subject[1:]}_{code}"
  if not subject_dir.is_dir():
    raise FrameSourceError(f"subject folder for video {video} does not exist", file=subject_dir)
  matches = sorted(p for p in subject_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))
  if not matches:
    raise FrameSourceError(f"no folder {prefix}* for video {video}", file=subject_dir)
  if len(matches) > 1:
    raise FrameSourceError(f"several folders match {prefix}*: {[m.name for m in matches]}",
                           file=subject_dir)
  return ImageFolder(matches[0])
