"""The prepared CSV layout of ABPN / AUW-GCN / SpotFormer.

Columns ``subject,video_name,start_frame,apex_frame,end_frame,type_idx,au``; ``type_idx`` 1 is
MaE, 2 is ME. ``casme2_prepared.csv`` keeps the official 1-based frames (offset 0 = missing);
SpotFormer's ``samm_downsampled7.csv`` holds ``round((x-1)/7)``, i.e. 0-based frames of the
1/7-rate video: read it with ``index_base=0, fps=200/7``. Frames in the returned dataset are
1-based as everywhere in fes_jax.
"""

from __future__ import annotations

import os
import pathlib

from fes_jax.data import spreadsheet as ss
from fes_jax.data.errors import AnnotationError
from fes_jax.data.policies import Policies, RawRow, finalize_rows, parse_number
from fes_jax.data.types import Dataset, ExprType, SourceRef

COLUMNS = ("subject", "video_name", "start_frame", "apex_frame", "end_frame", "type_idx")


def read(path: str | os.PathLike, *, fps: float = 30.0, index_base: int = 1,
         policies: Policies | None = None, name: str = "prepared") -> Dataset:
  """Reads a prepared CSV.

  Args:
    path: the CSV file.
    fps: frame rate of the frame numbering in the file.
    index_base: 1 when frames are 1-based (0 then marks a missing value), 0 when 0-based
      (values are shifted by +1; -1 still marks a missing apex).
    policies: quirk policies.
    name: dataset name.
  """
  if index_base not in (0, 1):
    raise ValueError(f"index_base must be 0 or 1, got {index_base}")
  file = pathlib.Path(path)
  header, table = ss.load_csv(file)
  _, columns = ss.find_header([tuple(header)], COLUMNS, file=file, sheet=None)
  au = columns.get("au")
  rows = []
  for i, row in enumerate(table, 2):
    if ss.is_blank(row):
      continue
    src = SourceRef(str(file), None, i)

    def frame(column: str) -> float | None:
      value = parse_number(ss.cell(row, columns[ss.normalise(column)]), source=src, field=column)
      if index_base == 0 and value is not None and value >= 0:
        value += 1
      return value

    type_idx = parse_number(ss.cell(row, columns["type idx"]), source=src, field="type_idx")
    if type_idx not in (1.0, 2.0):
      raise AnnotationError("type_idx must be 1 (MaE) or 2 (ME)", file=file, row=i,
                            field="type_idx", value=ss.cell(row, columns["type idx"]))
    subject = ss.text(ss.cell(row, columns["subject"]))
    video = ss.text(ss.cell(row, columns["video name"]))
    if not subject or not video:
      raise AnnotationError("subject and video_name must not be empty", file=file, row=i,
                            field="video_name")
    rows.append(RawRow(subject=subject, video=video, onset=frame("start_frame"),
                       apex=frame("apex_frame"), offset=frame("end_frame"),
                       type=ExprType.from_type_idx(int(type_idx)), source=src,
                       aus=ss.text(ss.cell(row, au))))
  if not rows:
    raise AnnotationError("no annotation rows", file=file)
  dataset = Dataset(name, fps, source=str(file))
  return finalize_rows(dataset, rows, policies or Policies())
