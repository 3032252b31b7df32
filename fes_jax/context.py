"""The run context shared by the pipeline stages, and small I/O helpers."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable

import ml_collections


class StageNotImplemented(RuntimeError):
  """A stage the current version of fes_jax cannot run yet."""

  def __init__(self, stage: str, detail: str):
    self.stage = stage
    super().__init__(f"stage {stage!r} is not implemented yet: {detail}")


class ConfigMismatch(RuntimeError):
  """The workdir was made by a different config."""


@dataclasses.dataclass
class Context:
  """What every stage gets: the config, the workdir and shared state between stages."""

  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  state: dict[str, Any] = dataclasses.field(default_factory=dict)

  def path(self, *parts: str) -> pathlib.Path:
    return self.workdir.joinpath(*parts)


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  run: Callable[[Context], dict[str, Any]]  # returns a JSON-able record of what it made
  per_fold: bool = False


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
    f.write("\n")
  os.replace(tmp, path)
