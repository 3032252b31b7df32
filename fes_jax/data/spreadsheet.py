"""Reading .xlsx / .xls / .csv tables into plain rows, with errors that say where."""

from __future__ import annotations

import csv
import os
import pathlib
import re
from typing import Any, Sequence

from fes_jax.data.errors import AnnotationError

Row = tuple[Any, ...]


def load_sheets(path: str | os.PathLike) -> dict[str, list[Row]]:
  """All sheets of a workbook as ``{sheet name: [row tuples]}`` (cell values, not formulas)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise AnnotationError("annotation file does not exist", file=path)
  suffix = path.suffix.lower()
  try:
    if suffix in (".xlsx", ".xlsm"):
      import openpyxl  # pylint: disable=import-outside-toplevel

      book = openpyxl.load_workbook(path, read_only=True, data_only=True)
      try:
        return {ws.title: [tuple(r) for r in ws.iter_rows(values_only=True)]
                for ws in book.worksheets}
      finally:
        book.close()
    if suffix == ".xls":
      import xlrd  # pylint: disable=import-outside-toplevel

      book = xlrd.open_workbook(str(path))
      return {sh.name: [tuple(_xls_value(c) for c in sh.row(i)) for i in range(sh.nrows)]
              for sh in book.sheets()}
  except AnnotationError:
    raise
  except Exception as e:  # corrupt or mislabelled workbook
    raise AnnotationError(f"cannot read workbook: {type(e).__name__}: {e}", file=path) from e
  raise AnnotationError(f"unsupported spreadsheet type {suffix!r} (want .xlsx or .xls)",
                        file=path)


def _xls_value(cell) -> Any:
  import xlrd  # pylint: disable=import-outside-toplevel

  if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
    return None
  return cell.value


def load_csv(path: str | os.PathLike) -> tuple[list[str], list[Row]]:
  """A CSV file as (header, rows); rows keep their string cells."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise AnnotationError("annotation file does not exist", file=path)
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    try:
      header = next(reader)
    except StopIteration:
      raise AnnotationError("CSV file is empty", file=path) from None
    rows = [tuple(r) for r in reader]
  return [h.strip() for h in header], rows


def sheet(sheets: dict[str, list[Row]], name: str, *, file: Any) -> list[Row]:
  """The sheet called ``name``; an error listing the sheets that exist otherwise."""
  if name not in sheets:
    raise AnnotationError(f"missing sheet {name!r} (sheets present: {sorted(sheets)})",
                          file=file, sheet=name)
  return sheets[name]


def normalise(name: Any) -> str:
  """Header text -> lower-case words separated by single spaces."""
  return re.sub(r"[\s_]+", " ", str(name or "")).strip().lower()


def find_header(rows: Sequence[Row], required: Sequence[str], *, file: Any, sheet: str | None,
                search_rows: int = 30) -> tuple[int, dict[str, int]]:
  """Finds the header row holding every ``required`` column name (case/space-insensitive).

  Returns the 0-based index of the header row and ``{normalised name: column index}``.
  """
  want = [normalise(r) for r in required]
  best: tuple[int, list[str]] | None = None
  for i, row in enumerate(rows[:search_rows]):
    names = [normalise(c) for c in row]
    missing = [w for w in want if w not in names]
    if not missing:
      return i, {n: j for j, n in enumerate(names) if n}
    if best is None or len(missing) < len(best[1]):
      best = (i, missing)
  detail = ""
  if best is not None and len(best[1]) < len(want):
    detail = f"; row {best[0] + 1} looks like the header but lacks {best[1]}"
  raise AnnotationError(f"no header row with columns {list(required)} in the first "
                        f"{search_rows} rows{detail}", file=file, sheet=sheet)


def cell(row: Row, index: int | None) -> Any:
  if index is None or index >= len(row):
    return None
  return row[index]


def text(value: Any) -> str:
  """A cell as trimmed text; integral floats lose their ``.0``."""
  if value is None:
    return ""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  return str(value).strip()


def is_blank(row: Row) -> bool:
  return all(c is None or (isinstance(c, str) and not c.strip()) for c in row)
