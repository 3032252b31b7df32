"""Small annotation files and frame folders in the real layouts, written by the tests."""

from __future__ import annotations

import pathlib

import numpy as np

CASME2_CODES = (("0401", "anger1"), ("0502", "happy1"))


def write_casme2_xlsx(path: pathlib.Path, rows, *, folders=((15, "s15", 1), (16, "s16", 2)),
                      codes=CASME2_CODES, drop_sheet: str | None = None) -> pathlib.Path:
  """CAS(ME)^2 coding file: ``rows`` are 9-tuples of the CASFEcode_final sheet."""
  import openpyxl

  book = openpyxl.Workbook()
  code = book.active
  code.title = "CASFEcode_final"
  rule1 = book.create_sheet("naming rule1")
  rule2 = book.create_sheet("naming rule2")
  by_participant = {p: (n, f) for n, f, p in folders}
  for row in rows:
    code.append(list(row))
    n, f = by_participant.get(row[0], (99, "s99"))
    rule1.append([n, f, row[0]])
  for c, stem in codes:
    rule2.append([int(c), stem])  # codes stored as ints, as in the real file
  if drop_sheet:
    del book[drop_sheet]
  book.save(path)
  return path


def casme2_rows():
  return [
      (1, "anger1_1", 10, 15, 40, "4+10", "negative", "macro-expression", "anger"),
      (1, "anger1_2", 50, 55, 0, 4, "negative", "macro-expression", "anger"),
      (1, "happy1_1", 20, 25, 33, 12, "positive", "micro-expression", "happiness"),
      (2, "anger1_1", 5, 9, 18, 7, "others", "micro-expression", "anger"),
  ]


def write_frames(folder: pathlib.Path, numbers, *, pattern="img{}.jpg", size=(24, 32)):
  """Writes small JPEGs whose mean intensity encodes the frame number."""
  import cv2

  folder.mkdir(parents=True, exist_ok=True)
  for n in numbers:
    image = np.full((*size, 3), (n * 7) % 256, np.uint8)
    assert cv2.imwrite(str(folder / pattern.format(n)), image)
  return folder


def write_casme2_dataset(root: pathlib.Path, num_frames: int = 60) -> dict[str, pathlib.Path]:
  """A complete tiny CAS(ME)^2-layout dataset: xlsx, rawpic folders, frame counts."""
  root.mkdir(parents=True, exist_ok=True)
  xlsx = write_casme2_xlsx(root / "CAS(ME)^2code_final.xlsx", casme2_rows())
  raw = root / "rawpic"
  for folder in ("s15/15_0401girlcrashing", "s15/15_0502funnyerrors",
                 "s16/16_0401girlcrashing"):
    write_frames(raw / folder, range(1, num_frames + 1))
  counts = root / "video_frame_counts.txt"
  counts.write_text("".join(f"{v} {num_frames}\n" for v in ("s15_0401", "s15_0502",
                                                             "s16_0401")))
  return {"annotations": xlsx, "frames_root": raw, "frame_counts": counts}


def write_samm_xlsx(path: pathlib.Path, rows, *, header=None) -> pathlib.Path:
  """SAMM-LV FACS file: 9 preamble rows, header on row 10."""
  import openpyxl

  book = openpyxl.Workbook()
  ws = book.active
  ws.title = "FACS_Movement_Only"
  ws.append(["SAMM Long Videos Dataset - FACS Codes"])
  for _ in range(8):
    ws.append([None])
  ws.append(header or ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                       "Duration", "Type", "Action Units", "Notes"])
  for r in rows:
    ws.append(list(r))
  book.save(path)
  return path
