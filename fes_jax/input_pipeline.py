"""Reading the segment TFRecords (``fes_jax.data.tfrecords``) into sharded jax arrays.

Per process: a tf.data pipeline over this process's share of a split (``tfds.even_splits``),
yielding numpy batches of segments; :func:`to_global_array` assembles them into global
``jax.Array`` s sharded along the batch axis; :func:`segments_to_windows` flattens segments
(B, L, ...) into the model's windows (B * L, ...).

Training (``repeat=True`` or ``drop_no_expression=True``): filter, shuffle, repeat, batch with
``drop_remainder``. With several processes the per-process example counts can differ, so a
training loop must repeat and run a fixed number of steps.

Evaluation (``repeat=False`` and ``drop_no_expression=False``): every segment once, in
record order (unless ``shuffle``); each process pads its stream with empty segments
(``valid`` all False, ``video`` empty) up to the same number of full batches, so all
processes run the same number of steps.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fes_jax.data import tfrecords

Batch = dict[str, Any]


class _DeliberateShuffleFilter(logging.Filter):
  """Drops tfds's per-call warning that shuffled reading of our ordered records is not in
  order (we shuffle training reads on purpose; evaluation reads stay ordered and guarded)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "will not be read in order because `shuffle_files=True`" not in record.getMessage()


logging.getLogger("absl").addFilter(_DeliberateShuffleFilter())


def process_split(split: str, process_index: int, process_count: int) -> Any:
  """This process's share of ``split`` (the first processes get one more on a remainder)."""
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count)[process_index]


def num_examples(builder: tfds.core.DatasetBuilder, split: Any) -> int:
  """Examples in ``split`` (a name, ``"a+b"``, or a sub-split)."""
  return int(builder.info.splits[split].num_examples)


def _padding_dataset(spec: Mapping[str, tf.TensorSpec], count: int) -> tf.data.Dataset:
  """``count`` empty segments: zeros, onset/offset class "none", empty strings."""
  def fill(key, s):
    if s.dtype == tf.string:
      return tf.fill(s.shape, "")
    return tf.fill(s.shape, tf.cast(tfrecords.PAD_VALUES.get(key, 0), s.dtype))
  example = {k: fill(k, s) for k, s in spec.items()}
  return tf.data.Dataset.from_tensors(example).repeat(count)


def make_dataset(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int,
                 shuffle: bool, seed: int, drop_no_expression: bool, repeat: bool,
                 process_index: int | None = None, process_count: int | None = None,
                 shuffle_buffer: int = 2048, prefetch: int = 2) -> Iterable[Batch]:
  """Numpy batches of segments for this process.

  Args:
    builder: a built ``SpottingSegments`` (or ``tfds.builder_from_directory`` of one).
    split: e.g. ``tfrecords.train_split(subjects, held_out)`` or a single subject's split.
    batch_size: global batch size in segments; each process gets
      ``batch_size // process_count`` (must divide).
    shuffle: shuffle files and examples (seeded).
    seed: the shuffle seed.
    drop_no_expression: keep only segments with an expression frame (training).
    repeat: repeat forever (training).
    process_index: defaults to ``jax.process_index()``.
    process_count: defaults to ``jax.process_count()``.
    shuffle_buffer: examples in the shuffle buffer.
    prefetch: batches to prefetch.

  Returns:
    An iterable of dicts of numpy arrays; per-frame leaves are (b, L, ...), ``video`` and
    ``subject`` are bytes arrays (b,).
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if batch_size % count:
    raise ValueError(f"batch_size {batch_size} is not divisible by {count} processes")
  local_batch = batch_size // count
  local_split = process_split(split, index, count)
  # The records are written in order (disable_shuffling); shuffled reading is deliberate.
  read_config = tfds.ReadConfig(shuffle_seed=seed, enable_ordering_guard=not shuffle)
  ds = builder.as_dataset(split=local_split, shuffle_files=shuffle, read_config=read_config)
  if drop_no_expression:
    ds = ds.filter(lambda ex: ex["has_expression"])
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  training = repeat or drop_no_expression
  if not training:
    counts = [num_examples(builder, process_split(split, i, count)) for i in range(count)]
    steps = math.ceil(max(counts) / local_batch)
    missing = steps * local_batch - counts[index]
    if missing:
      ds = ds.concatenate(_padding_dataset(ds.element_spec, missing))
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(prefetch)
  return tfds.as_numpy(ds)


def _flatten(x: Any, per_frame: bool, length: int) -> Any:
  xp = np if isinstance(x, np.ndarray) else jnp
  if per_frame:
    return x.reshape((x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))
  return xp.repeat(x, length, axis=0)


def segments_to_windows(batch: Mapping[str, Any]) -> Batch:
  """(B, L, ...) per-frame leaves -> (B * L, ...) windows, segment-major (row b * L + t).

  Per-segment leaves (``video``, ``subject``, ``segment``, ``has_expression``) are repeated
  L times. ``valid`` becomes the (B * L,) window mask. Works on numpy or jax arrays.
  """
  length = batch["valid"].shape[1]
  out = {}
  for key, x in batch.items():
    if key not in tfrecords.PER_FRAME_KEYS and key not in tfrecords.PER_SEGMENT_KEYS:
      raise KeyError(f"unknown batch entry {key!r}")
    out[key] = _flatten(x, key in tfrecords.PER_FRAME_KEYS, length)
  return out


def to_global_array(batch: Mapping[str, Any], mesh: Mesh, pspec: P = P("data")) -> Batch:
  """Every numeric leaf -> a global ``jax.Array`` sharded as ``NamedSharding(mesh, pspec)``.

  Each process passes its local batch; the global batch axis is the concatenation over
  processes (``jax.make_array_from_process_local_data``). String leaves (``video``,
  ``subject``) stay local numpy arrays.
  """
  sharding = NamedSharding(mesh, pspec)

  def convert(x):
    x = np.asarray(x)
    if x.dtype.kind in "OSU":
      return x
    return jax.make_array_from_process_local_data(sharding, x)

  return {key: convert(x) for key, x in batch.items()}
