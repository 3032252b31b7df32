"""The trainer's view of the segment TFRecords: split statistics, batches, predictions.

Batches come from ``fes_jax.input_pipeline.make_dataset`` (this process's share of a split),
keep the entries a step reads (``step.step_batch``) and become global arrays sharded over
the mesh's ``'data'`` axis. Predictions are gathered from every process in the global batch
order (``process_allgather``), so they need no assumption about which process holds which rows.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from fes_jax import input_pipeline
from fes_jax.data import tfrecords
from fes_jax.train import mesh as mesh_lib, step as step_lib


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """Counts of a split (read once, the features not decoded)."""

  segments: int
  expression_segments: int
  windows: int  # valid windows
  videos: tuple[str, ...]  # sorted


def split_info(builder: tfds.core.DatasetBuilder, split: str) -> SplitInfo:
  decoders = {"features": tfds.decode.SkipDecoding(), "labels": tfds.decode.SkipDecoding()}
  ds = builder.as_dataset(split=split, decoders=decoders)
  ds = ds.map(lambda ex: (ex["has_expression"], tf.reduce_sum(tf.cast(ex["valid"], tf.int32)),
                          ex["video"]))
  segments = expressive = windows = 0
  videos = set()
  for has_expr, valid, video in tfds.as_numpy(ds):
    segments += 1
    expressive += int(has_expr)
    windows += int(valid)
    videos.add(video.decode())
  return SplitInfo(segments, expressive, windows, tuple(sorted(videos)))


def epoch_seed(seed: int, epoch: int) -> int:
  """The input pipeline's shuffle seed of one epoch (a function of (seed, epoch) only)."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def host_train_batches(builder: tfds.core.DatasetBuilder, split: str, *, batch_segments: int,
                       seed: int, num_nodes: int) -> Callable[[int], Iterator[Any]]:
  """``epoch -> this process's step batches`` (numpy): segments with an expression,
  shuffled with the epoch's seed, repeated (the loop takes a fixed number of steps)."""

  def batches(epoch: int) -> Iterator[Any]:
    ds = input_pipeline.make_dataset(
        builder, split, batch_size=batch_segments, shuffle=True, seed=epoch_seed(seed, epoch),
        drop_no_expression=True, repeat=True, process_index=jax.process_index(),
        process_count=jax.process_count())
    for batch in ds:
      yield step_lib.step_batch(batch, num_nodes)

  return batches


def train_batches(builder: tfds.core.DatasetBuilder, split: str, *, batch_segments: int,
                  seed: int, num_nodes: int, mesh: Mesh) -> Callable[[int], Iterator[Any]]:
  """``epoch -> global batches`` of :func:`host_train_batches`, sharded over ``mesh``."""
  host = host_train_batches(builder, split, batch_segments=batch_segments, seed=seed,
                            num_nodes=num_nodes)

  def batches(epoch: int) -> Iterator[Any]:
    for batch in host(epoch):
      yield input_pipeline.to_global_array(batch, mesh)

  return batches


def eval_batches(builder: tfds.core.DatasetBuilder, split: str, *, batch_segments: int,
                 num_nodes: int, mesh: Mesh, video_ids: dict[str, int]
                 ) -> Iterator[tuple[Any, Any]]:
  """Every segment once, in record order, padded to whole batches (``valid`` False):
  ``(step batch, metadata)``, both global arrays; metadata holds ``frame_numbers``,
  ``valid`` and ``video_id`` (index into ``video_ids``; -1 on padding)."""
  ds = input_pipeline.make_dataset(
      builder, split, batch_size=batch_segments, shuffle=False, seed=0,
      drop_no_expression=False, repeat=False, process_index=jax.process_index(),
      process_count=jax.process_count())
  for batch in ds:
    ids = np.array([video_ids.get(v.decode(), -1) for v in batch["video"]], np.int32)
    meta = {"frame_numbers": batch["frame_numbers"], "valid": batch["valid"], "video_id": ids}
    yield (input_pipeline.to_global_array(step_lib.step_batch(batch, num_nodes), mesh),
           input_pipeline.to_global_array(meta, mesh))


def abstract_batch(builder: tfds.core.DatasetBuilder, *, batch_segments: int, num_nodes: int,
                   mesh: Mesh, folds: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and shardings of a global step batch (to compile before reading);
  ``folds`` > 0: of a stack of that many folds' batches (K, S, ...), split along S."""
  meta = builder.info.metadata
  l, w = int(meta["segment_length"]), int(meta["window"])
  sharding = (mesh_lib.folds_batch_sharding(mesh) if folds else mesh_lib.batch_sharding(mesh))
  lead = (folds,) if folds else ()
  shapes = {"features": ((batch_segments, l, w, num_nodes, 2), np.float32),
            "valid": ((batch_segments, l), np.bool_),
            "has_expression": ((batch_segments,), np.bool_)}
  for key in step_lib.TARGET_FIELDS:
    dtype = np.int32 if key.endswith(("onoff", "cls")) else np.float32
    shapes[key] = ((batch_segments, l), dtype)
  return {k: jax.ShapeDtypeStruct(lead + shape, dtype, sharding=sharding)
          for k, (shape, dtype) in shapes.items()}


def gather(x: Any) -> np.ndarray:
  """A global array on the host, whole (every process gets all of it)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def predict(eval_fn: Callable[[Any], dict[str, Any]], batches: Iterator[tuple[Any, Any]],
            videos: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Runs ``eval_fn`` over the batches.

  Returns:
    (predictions of the valid windows: ``probs`` (M, 10) float32, ``video`` (M,) str,
    ``frame_numbers`` (M,) int32; the loss terms averaged over expression windows).
  """
  probs, frames, ids, valid = [], [], [], []
  sums: dict[str, float] = {}
  weight = 0.0
  for batch, meta in batches:
    out = eval_fn(batch)
    l = meta["valid"].shape[1]
    probs.append(gather(out["probs"]))
    frames.append(gather(meta["frame_numbers"]).reshape(-1))
    valid.append(gather(meta["valid"]).reshape(-1))
    ids.append(np.repeat(gather(meta["video_id"]), l))
    w = float(out["weight"])
    weight += w
    for key, value in out.items():
      if key not in ("probs", "weight"):
        sums[key] = sums.get(key, 0.0) + float(value) * w
  if not probs:
    raise ValueError("the split has no segments")
  keep = np.concatenate(valid).astype(bool)
  video_id = np.concatenate(ids)[keep]
  if (video_id < 0).any():
    raise ValueError("a valid window without a known video")
  preds = {"probs": np.concatenate(probs)[keep].astype(np.float32),
           "video": np.asarray(videos)[video_id].astype(str),
           "frame_numbers": np.concatenate(frames)[keep].astype(np.int32)}
  losses = {k: v / weight for k, v in sums.items()} if weight > 0 else {}
  return preds, losses


def predict_split(eval_fn: Callable[[Any], dict[str, Any]], builder: tfds.core.DatasetBuilder,
                  split: str, videos: tuple[str, ...], *, batch_segments: int, num_nodes: int,
                  mesh: Mesh) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """:func:`predict` over every segment of ``split`` (``videos``: its ``split_info`` videos,
  read once by the caller)."""
  batches = eval_batches(builder, split, batch_segments=batch_segments, num_nodes=num_nodes,
                         mesh=mesh, video_ids={v: i for i, v in enumerate(videos)})
  return predict(eval_fn, batches, videos)


def save_predictions(path: str | os.PathLike, preds: dict[str, np.ndarray],
                     **info: Any) -> pathlib.Path:
  """Writes ``predictions.npz`` atomically (``info`` entries as 0-d arrays)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "wb") as f:
    np.savez(f, **preds, **{k: np.asarray(v) for k, v in info.items()})
  os.replace(tmp, path)
  return path


def records_builder(data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
  """Reopens built records from their version directory (no dataset object needed)."""
  return tfds.builder_from_directory(str(data_dir))


def subject_splits(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
  """``{subject: split}`` as the builder recorded them."""
  return dict(builder.info.metadata["subject_splits"])


def join_splits(subjects: list[str]) -> str:
  return "+".join(tfrecords.split_name(s) for s in sorted(subjects))
