"""Frame-count files: one ``<video name> <frame count>`` pair per line."""

from __future__ import annotations

import os
import pathlib

from fes_jax.data.errors import AnnotationError


def read_frame_counts(path: str | os.PathLike) -> dict[str, int]:
  """Reads e.g. ``s15_0101 2052`` (CAS(ME)^2) or ``006_1 8748`` (SAMM-LV) lines."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise AnnotationError("frame-count file does not exist", file=path)
  counts: dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = line.replace(",", " ").split()
      if len(parts) != 2:
        raise AnnotationError("expected '<video> <frame count>'", file=path, row=lineno,
                              value=line)
      name, count = parts
      try:
        n = int(count)
      except ValueError:
        raise AnnotationError("frame count is not an integer", file=path, row=lineno,
                              field="frame count", value=count) from None
      if n <= 0:
        raise AnnotationError("frame count must be positive", file=path, row=lineno,
                              field="frame count", value=n)
      if name in counts and counts[name] != n:
        raise AnnotationError(f"video {name!r} listed twice with different counts",
                              file=path, row=lineno, value=line)
      counts[name] = n
  return counts


def write_frame_counts(path: str | os.PathLike, counts: dict[str, int]) -> None:
  """Writes a frame-count file atomically."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for name in sorted(counts):
      f.write(f"{name} {counts[name]}\n")
  os.replace(tmp, path)
