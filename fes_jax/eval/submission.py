"""MEGC submission CSVs: ``vid,onset,offset,type`` with type ``mae`` / ``me`` and frames in the
original video's 1-based numbering."""

from __future__ import annotations

import csv
import os
import pathlib
from typing import Iterable

from fes_jax.data.errors import AnnotationError
from fes_jax.data.types import Dataset
from fes_jax.eval.megc import Span

HEADER = ("vid", "onset", "offset", "type")


def write_csv(path: str | os.PathLike, spans: Iterable[Span]) -> None:
  """Writes atomically (temporary file, then rename)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(HEADER)
    for s in sorted(spans, key=lambda s: (s.video, s.onset, s.offset or 0, s.type)):
      w.writerow([s.video, s.onset, s.offset, s.type])
  os.replace(tmp, path)


def read_csv(path: str | os.PathLike) -> list[Span]:
  """Reads a submission CSV; errors name the row and field."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise AnnotationError("prediction file does not exist", file=path)
  out = []
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    missing = [h for h in HEADER if h not in (reader.fieldnames or [])]
    if missing:
      raise AnnotationError(f"missing columns {missing} (want {','.join(HEADER)})", file=path)
    for row_no, row in enumerate(reader, 2):
      kind = row["type"].strip().lower()
      if kind not in ("mae", "me"):
        raise AnnotationError("type must be 'mae' or 'me'", file=path, row=row_no,
                              field="type", value=row["type"])
      try:
        onset, offset = int(float(row["onset"])), int(float(row["offset"]))
      except ValueError:
        raise AnnotationError("onset and offset must be frame numbers", file=path,
                              row=row_no, field="onset/offset") from None
      if onset > offset:
        raise AnnotationError(f"onset {onset} is after offset {offset}", file=path,
                              row=row_no, field="offset")
      out.append(Span(row["vid"].strip(), onset, offset, kind))
  return out


def ground_truth(dataset: Dataset, *, original_frames: bool = True) -> list[Span]:
  """The dataset's intervals as spans, in the original numbering unless told otherwise."""
  out = []
  for video, iv in dataset.intervals():
    conv = video.to_original_frame if original_frames else (lambda k: k)
    out.append(Span(video.name, conv(iv.onset),
                    None if iv.offset is None else conv(iv.offset), iv.type.value))
  return out
