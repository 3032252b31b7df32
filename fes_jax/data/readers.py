"""One entry point over the dataset readers: ``read_annotations(format, path, ...)``."""

from __future__ import annotations

import os
from typing import Any

from fes_jax.data import casme2, casme3, prepared_csv, samm_lv
from fes_jax.data.policies import Policies
from fes_jax.data.types import Dataset

FORMATS = ("casme2", "samm_lv", "casme3", "csv")


def read_annotations(fmt: str, path: str | os.PathLike, *, policies: Policies | None = None,
                     frames_root: str | os.PathLike | None = None,
                     frame_counts: str | os.PathLike | None = None,
                     **options: Any) -> Dataset:
  """Reads an annotation file of the given format into a :class:`Dataset`.

  ``options`` go to the format's reader: ``type_when_missing`` (casme3); ``fps``,
  ``index_base`` (csv).
  """
  policies = policies or Policies()
  if fmt == "casme2":
    return casme2.read(path, frames_root=frames_root, frame_counts=frame_counts,
                       policies=policies, **options)
  if fmt == "samm_lv":
    return samm_lv.read(path, frames_root=frames_root, frame_counts=frame_counts,
                        policies=policies, **options)
  if fmt == "casme3":
    if frame_counts is not None:
      raise ValueError("casme3 takes frame counts from its frames or its export, not a file")
    return casme3.read(path, frames_root=frames_root, policies=policies, **options)
  if fmt == "csv":
    if frames_root is not None or frame_counts is not None:
      raise ValueError("the prepared CSV format has no frame layout or frame-count file")
    return prepared_csv.read(path, policies=policies, **options)
  raise ValueError(f"unknown annotation format {fmt!r}; known: {FORMATS}")
