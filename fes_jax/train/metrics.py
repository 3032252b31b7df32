"""Training metrics: TensorBoard event files and a JSON history, written by process 0.

TensorBoard: scalars via ``tf.summary.write`` with the scalars plugin's metadata (TF is
installed for the input pipeline; the ``tensorboard`` package, which ``tf.summary.scalar``
needs, is not: the event files are the same either way). JSON: ``metrics.json`` holds
``{"epochs": [per-epoch records], ...}``, rewritten atomically after every epoch (the
report stage reads ``train_loss`` from it).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from fes_jax.context import write_json_atomic


def _scalar_metadata() -> Any:
  from tensorflow.core.framework import summary_pb2  # pylint: disable=import-outside-toplevel

  meta = summary_pb2.SummaryMetadata()
  meta.plugin_data.plugin_name = "scalars"
  meta.data_class = summary_pb2.DATA_CLASS_SCALAR
  return meta


def to_python(value: Any) -> Any:
  """numpy / jax scalars and arrays -> JSON-able Python values."""
  if isinstance(value, Mapping):
    return {str(k): to_python(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_python(v) for v in value]
  if hasattr(value, "dtype") or isinstance(value, np.generic):
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return value


class MetricsWriter:
  """Scalars to TensorBoard (``<directory>/tensorboard``) and a JSON file.

  Args:
    directory: the fold directory.
    enabled: False on every process but 0 (nothing is written).
    json_name: the JSON history file name.
  """

  def __init__(self, directory: str | os.PathLike, *, enabled: bool = True,
               json_name: str = "metrics.json"):
    self.directory = pathlib.Path(directory)
    self.enabled = enabled
    self.json_path = self.directory / json_name
    self._writer = None
    if enabled:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel

      self._tf = tf
      self._writer = tf.summary.create_file_writer(str(self.directory / "tensorboard"))
      self._meta = _scalar_metadata()

  def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
    """Writes each finite numeric value as a TensorBoard scalar at ``step``."""
    if not self.enabled:
      return
    tf = self._tf
    with self._writer.as_default():
      for name, value in values.items():
        if isinstance(value, (bool, str)) or value is None:
          continue
        v = float(np.asarray(value))
        tf.summary.write(f"{prefix}{name}", tf.constant(v, tf.float32), step=int(step),
                         metadata=self._meta)
    self._writer.flush()

  def write_json(self, record: Mapping[str, Any]) -> None:
    if self.enabled:
      write_json_atomic(self.json_path, to_python(record))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
      self._writer = None


def read_json(path: str | os.PathLike) -> dict[str, Any]:
  return json.loads(pathlib.Path(path).read_text())
