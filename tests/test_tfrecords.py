"""Segment TFRecords (fes_jax.data.tfrecords) and the input pipeline (fes_jax.input_pipeline)."""

import pathlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, PartitionSpec as P

from fes_jax import input_pipeline as ip
from fes_jax.data import tfrecords as tfr
from fes_jax.data.types import Dataset, ExprType, Interval, Video
from fes_jax.preprocess import labels as labels_lib

N, W, R, L = 40, 5, 10, 16
SUBJECTS = ("s1", "s2", "sp.3")


def _iv(onset, apex, offset, type_):
  return Interval(onset=onset, apex=apex, offset=offset, type=type_)


def make_dataset() -> Dataset:
  """Three subjects, four 40-frame videos (one without expressions, one named with a /)."""
  ds = Dataset(name="Tiny(ME)^2", fps=30.0)
  me, mae = ExprType.ME, ExprType.MAE
  for subject, name, ivs in (
      ("s1", "s1_a", [_iv(5, 7, 10, me), _iv(20, 25, 30, mae)]),
      ("s1", "s1_b", []),
      ("s2", "s2_a", [_iv(33, 36, 40, mae)]),
      ("sp.3", "sp.3/a", [_iv(1, 2, 4, me), _iv(18, 19, None, mae)])):
    ds.add_video(Video(subject, name, 30.0, num_frames=N, intervals=ivs))
  ds.sort()
  return ds


def write_features(features_dir: pathlib.Path, dataset: Dataset, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  arrays = {}
  entries = []
  for video in dataset.videos():
    feats = rng.standard_normal((N, W, R, 2)).astype(np.float32)
    arrays[video.name] = feats
    entries.append(tfr.write_video_features(features_dir, subject=video.subject,
                                            video=video.name, features_NxWxRx2=feats))
  tfr.write_index(features_dir, entries)
  return arrays


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfr")
  dataset = make_dataset()
  arrays = write_features(root / "features", dataset)
  builder = tfr.build(dataset, root / "features", root / "tfrecords", tag="fake")
  return {"root": root, "dataset": dataset, "arrays": arrays, "builder": builder}


def _read(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def test_on_disk_layout(built):
  builder = built["builder"]
  version_dir = pathlib.Path(builder.data_dir)
  assert version_dir.parent.parent == built["root"] / "tfrecords" / "spotting_segments"
  assert version_dir.name == "1.0.0"
  assert version_dir.parent.name.startswith("tiny_me_2-fake-w5-r10-l16-")
  names = sorted(p.name for p in version_dir.iterdir())
  assert "dataset_info.json" in names and "features.json" in names
  assert "spotting_segments-s1.tfrecord-00000-of-00001" in names
  assert not [p for p in version_dir.parent.iterdir() if "incomplete" in p.name]
  features_files = sorted(p.name for p in (built["root"] / "features" / "videos").iterdir())
  assert features_files == ["index.json", "s1_a.npz", "s1_b.npz", "s2_a.npz", "sp.3__a.npz"]


def test_round_trip_exact(built):
  builder, dataset = built["builder"], built["dataset"]
  for subject in SUBJECTS:
    records = _read(builder, tfr.test_split(subject))
    order = [(ex["video"].decode(), ex["segment"]) for ex in records]
    assert order == sorted(order)  # generation order: videos sorted, segments in frame order
    by_video = {}
    for ex in records:
      by_video.setdefault(ex["video"].decode(), []).append(ex)
    assert sorted(by_video) == sorted(dataset.subjects[subject].videos)
    for name, exs in by_video.items():
      assert [ex["segment"] for ex in exs] == [0, 1, 2]
      assert [int(ex["valid"].sum()) for ex in exs] == [16, 16, 8]
      assert all(ex["subject"].decode() == subject for ex in exs)
      cat = {k: np.concatenate([ex[k] for ex in exs]) for k in tfr.PER_FRAME_KEYS}
      valid = cat["valid"]
      np.testing.assert_array_equal(cat["features"][valid], built["arrays"][name])
      np.testing.assert_array_equal(cat["frame_numbers"][valid], np.arange(1, N + 1))
      expected = labels_lib.frame_labels(dataset.video(name)).as_dict()
      for key, value in expected.items():
        np.testing.assert_array_equal(cat[key][valid], value, err_msg=f"{name} {key}")
      pad = ~valid
      assert not cat["features"][pad].any() and not cat["labels"][pad].any()
      assert (cat["me_onoff"][pad] == 2).all() and (cat["mae_onoff"][pad] == 2).all()
      assert (cat["frame_numbers"][pad] == 0).all() and not cat["cls"][pad].any()
      for ex in exs:
        assert ex["has_expression"] == bool((ex["labels"][:, [3, 7]] > 0).any())
      assert exs[0]["features"].dtype == np.float32 and exs[0]["me_onoff"].dtype == np.int32


def test_splits_and_fold_arithmetic(built):
  builder = built["builder"]
  assert tfr.split_name("sp.3") == "sp_2e3" and tfr.split_name("a_b") == "a_5fb"
  assert sorted(builder.info.splits) == ["s1", "s2", "sp_2e3"]
  assert builder.info.metadata["subject_splits"] == {"s1": "s1", "s2": "s2", "sp.3": "sp_2e3"}
  assert tfr.train_split(SUBJECTS, "s2") == "s1+sp_2e3" and tfr.test_split("s2") == "s2"
  with pytest.raises(ValueError, match="not among"):
    tfr.train_split(SUBJECTS, "s9")
  train = _read(builder, tfr.train_split(SUBJECTS, "s2"))
  assert {ex["subject"].decode() for ex in train} == {"s1", "sp.3"} and len(train) == 9
  reread = tfds.builder_from_directory(builder.data_dir)
  assert reread.info.metadata["subject_splits"]["sp.3"] == "sp_2e3"
  assert ip.num_examples(reread, "s1+s2") == 9


def test_deterministic_and_config_names(built, tmp_path):
  dataset, builder = built["dataset"], built["builder"]
  again = tfr.build(dataset, built["root"] / "features", tmp_path / "tfrecords", tag="fake")
  assert again.builder_config.name == builder.builder_config.name
  first = sorted(pathlib.Path(builder.data_dir).glob("*.tfrecord*"))
  second = sorted(pathlib.Path(again.data_dir).glob("*.tfrecord*"))
  assert [p.name for p in first] == [p.name for p in second] and len(first) == 3
  for a, b in zip(first, second):
    assert a.read_bytes() == b.read_bytes()
  index = tfr.read_index(built["root"] / "features")
  name = tfr.config_name(dataset, index, 16, "fake")
  assert name == builder.builder_config.name
  assert tfr.config_name(dataset, index, 8, "fake") != name
  assert tfr.config_name(dataset, index, 16, "other") != name
  moved = make_dataset()
  moved.video("s1_a").intervals[0] = _iv(5, 7, 11, ExprType.ME)
  assert tfr.config_name(moved, index, 16, "fake") != name


def test_drop_no_expression_filter(built):
  builder = built["builder"]
  split = tfr.train_split(SUBJECTS, "s2")
  kept = list(ip.make_dataset(builder, split, batch_size=1, shuffle=True, seed=3,
                              drop_no_expression=True, repeat=False))
  everything = _read(builder, split)
  expected = sorted((ex["video"], ex["segment"]) for ex in everything if ex["has_expression"])
  assert sorted((b["video"][0], b["segment"][0]) for b in kept) == expected
  assert len(expected) == 4  # s1_a: 0, 1; s1_b: none; sp.3/a: 0 (ME 1..4), 1 (MaE 18..19)
  again = list(ip.make_dataset(builder, split, batch_size=1, shuffle=True, seed=3,
                               drop_no_expression=True, repeat=False))
  order = [(b["video"][0], b["segment"][0]) for b in kept]
  assert [(b["video"][0], b["segment"][0]) for b in again] == order


def test_eval_pads_processes_to_equal_full_batches(built):
  builder = built["builder"]
  split = tfr.train_split(SUBJECTS, "s2")  # 9 segments
  seen = []
  steps = []
  for index in range(2):
    batches = list(ip.make_dataset(builder, split, batch_size=4, shuffle=False, seed=0,
                                   drop_no_expression=False, repeat=False,
                                   process_index=index, process_count=2))
    steps.append(len(batches))
    for b in batches:
      assert b["features"].shape == (2, L, W, R, 2)
      for video, segment, valid in zip(b["video"], b["segment"], b["valid"]):
        if video:
          seen.append((video, segment))
        else:
          assert not valid.any() and segment == 0
  assert steps == [3, 3]  # 5 and 4 examples -> 3 batches of 2 each
  assert sorted(seen) == sorted((ex["video"], ex["segment"]) for ex in _read(builder, split))


def test_training_repeats_with_full_batches(built):
  it = iter(ip.make_dataset(built["builder"], "s1", batch_size=2, shuffle=True, seed=0,
                            drop_no_expression=True, repeat=True))
  batches = [next(it) for _ in range(5)]  # s1 has 2 segments with an expression
  assert all(b["has_expression"].all() and b["features"].shape[0] == 2 for b in batches)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_global_array_sharded(built, num_devices):
  assert jax.device_count() == 8  # tests/conftest.py
  mesh = Mesh(np.array(jax.devices()[:num_devices]), ("data",))
  batch = next(iter(ip.make_dataset(built["builder"], "s1+s2+sp_2e3", batch_size=8,
                                    shuffle=False, seed=0, drop_no_expression=False,
                                    repeat=False)))
  glob = ip.to_global_array(batch, mesh, P("data"))
  feats = glob["features"]
  assert isinstance(feats, jax.Array) and feats.shape == (8, L, W, R, 2)
  assert len(feats.sharding.device_set) == num_devices
  assert {s.data.shape for s in feats.addressable_shards} == {(8 // num_devices, L, W, R, 2)}
  np.testing.assert_array_equal(np.asarray(feats), batch["features"])
  assert isinstance(glob["video"], np.ndarray) and glob["valid"].dtype == bool
  windows = ip.segments_to_windows(glob)
  assert windows["features"].shape == (8 * L, W, R, 2) and windows["valid"].shape == (8 * L,)
  np.testing.assert_array_equal(np.asarray(windows["features"][L + 3]), batch["features"][1, 3])
  assert windows["video"].shape == (8 * L,) and windows["video"][L] == batch["video"][1]
  np.testing.assert_array_equal(np.asarray(windows["me_onoff"]), batch["me_onoff"].reshape(-1))


def test_failed_build_leaves_no_version_dir(built, tmp_path, monkeypatch):
  dataset = make_dataset()
  features = tmp_path / "features"
  write_features(features, dataset)
  data_dir = tmp_path / "tfrecords"
  builder = tfr.SpottingSegments(dataset=dataset, features_dir=features, data_dir=data_dir)
  final = pathlib.Path(builder.data_dir)
  during = []
  original = tfr.SpottingSegments._generate_examples

  def generate(self, subject):
    during.append((pathlib.Path(self.data_dir).name, final.exists()))
    if subject == "s2":
      raise RuntimeError("boom")
    yield from original(self, subject)

  monkeypatch.setattr(tfr.SpottingSegments, "_generate_examples", generate)
  with pytest.raises(RuntimeError, match="boom"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  assert during and all(n.startswith("incomplete.") and n.endswith("_1.0.0") and not exists
                        for n, exists in during)
  assert not final.exists()
  assert not [p for p in final.parent.iterdir() if "incomplete" in p.name]


def test_inputs_are_validated(built, tmp_path):
  dataset = make_dataset()
  features = tmp_path / "features"
  write_features(features, dataset)
  dataset.add_video(Video("s2", "s2_missing", 30.0, num_frames=N))
  with pytest.raises(ValueError, match="no feature file"):
    tfr.SpottingSegments(dataset=dataset, features_dir=features, data_dir=tmp_path / "x")
  short = make_dataset()
  short.video("s2_a").num_frames = N - 1
  with pytest.raises(ValueError, match="39"):
    tfr.SpottingSegments(dataset=short, features_dir=features, data_dir=tmp_path / "x")
  video = make_dataset().video("s1_a")
  feats = np.zeros((3, W, R, 2), np.float32)
  with pytest.raises(ValueError, match="increase"):
    list(tfr.segment_examples(video, feats, np.array([1, 3, 2])))
  with pytest.raises(ValueError, match="increase"):
    list(tfr.segment_examples(video, feats, np.array([39, 40, 41])))
  with pytest.raises(ValueError, match=r"\(N, w, R, 2\)"):
    tfr.write_video_features(features, subject="s1", video="v", features_NxWxRx2=feats[..., 0])
