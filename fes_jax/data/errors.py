"""Errors that name the bad file, sheet, row and field."""

from __future__ import annotations

from typing import Any


class DataError(ValueError):
  """Bad input data. The message always says where: file, sheet, row, field."""

  def __init__(self, message: str, *, file: Any = None, sheet: str | None = None,
               row: int | None = None, field: str | None = None, value: Any = None):
    self.file, self.sheet, self.row, self.field, self.value = file, sheet, row, field, value
    where = []
    if file is not None:
      where.append(str(file))
    if sheet is not None:
      where.append(f"sheet {sheet!r}")
    if row is not None:
      where.append(f"row {row}")
    if field is not None:
      where.append(f"field {field!r}")
    prefix = ", ".join(where)
    detail = f" (value {value!r})" if value is not None else ""
    super().__init__(f"{prefix}: {message}{detail}" if prefix else f"{message}{detail}")


class AnnotationError(DataError):
  """A problem in an annotation file (missing sheet or column, unparsable cell, ...)."""


class FrameSourceError(DataError):
  """A problem with a video's frames (no frames, unreadable frame, ...)."""
