"""The evaluate / aggregate / report stages on hand-made fold predictions."""

import csv
import json

import numpy as np
import pytest

from fes_jax import config_lib, pipeline, stages
from fes_jax.context import Stage
from fes_jax.eval import postprocess
from fes_jax.eval import stages as eval_stages

import fixtures


def _perfect_predictions(video, num_frames):
  """Probabilities that spot exactly the video's ground truth (onset/apex/offset peaks)."""
  probs = np.zeros((num_frames, 10), np.float32)
  for kind in ("me", "mae"):
    probs[:, postprocess.CHANNELS[kind]["none"]] = 1.0
  for iv in video.intervals:
    ch = postprocess.CHANNELS[iv.type.value]
    for frame, key, value in ((iv.onset, "onset", 0.9), (iv.offset, "offset", 0.9),
                              (iv.apex, "apex", 0.95)):
      probs[frame - 1, ch[key]] = value
      if key != "apex":
        probs[frame - 1, ch["none"]] = 0.1
  return probs


def _fake_train(ctx):
  k = int(ctx.state["stage"].removeprefix("train_fold"))
  subject = stages.fold_subjects(ctx)[k]
  ds = stages.load_dataset(ctx)
  probs, videos, frames = [], [], []
  for v in ds.subjects[subject].videos.values():
    probs.append(_perfect_predictions(v, v.num_frames))
    videos += [v.name] * v.num_frames
    frames.append(np.arange(1, v.num_frames + 1))
  d = eval_stages.fold_dir(ctx, k)
  d.mkdir(parents=True, exist_ok=True)
  probs = np.concatenate(probs)
  frames = np.concatenate(frames).astype(np.int32)
  np.savez(d / "predictions.npz", probs=probs, video=np.array(videos), frame_numbers=frames)
  if ctx.config.train.selection == "oracle":  # epoch 2 is perfect, epochs 1 and 3 spot nothing
    (d / "oracle").mkdir()
    nothing = probs.copy()
    nothing[:, [postprocess.CHANNELS[t]["apex"] for t in ("me", "mae")]] = 0.0
    for epoch, p in ((1, nothing), (2, probs), (3, nothing)):
      np.savez(d / f"oracle/epoch_{epoch:03d}.npz", probs=p, video=np.array(videos),
               frame_numbers=frames)
  (d / "metrics.json").write_text(json.dumps({"epochs": [{"epoch": 1, "train_loss": 2.0},
                                                         {"epoch": 2, "train_loss": 1.5}]}))
  return {}


def _config(paths, selection="last_epoch"):
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config(
      "casme2", annotations=str(paths["annotations"]), frames_root=str(paths["frames_root"]),
      frame_counts=str(paths["frame_counts"]))
  cfg.preprocess = config_lib.preprocess_config()
  cfg.model = config_lib.spotformer_model_config()
  cfg.train = config_lib.train_config(selection=selection)
  cfg.eval = config_lib.eval_config()
  cfg.loso = config_lib.loso_config()
  return cfg


@pytest.mark.parametrize("selection", ["last_epoch", "oracle"])
def test_stages_spot_score_and_report(tmp_path, monkeypatch, selection):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=80)
  fixtures.write_casme2_xlsx(paths["annotations"], [
      (1, "anger1_1", 10, 25, 50, "4", "negative", "macro-expression", "anger"),  # findable
      (1, "anger1_2", 60, 62, 0, "4", "negative", "macro-expression", "anger"),  # offset := apex
      (1, "happy1_1", 20, 24, 27, "12", "positive", "micro-expression", "happiness"),
      (2, "anger1_1", 5, 9, 18, "7", "others", "micro-expression", "anger"),  # offset too far
  ])
  monkeypatch.setattr(stages, "STAGES", (
      Stage("prepare_data", stages.prepare_data),
      Stage("train", _fake_train, per_fold=True),
      Stage("evaluate", eval_stages.evaluate), Stage("aggregate", eval_stages.aggregate),
      Stage("report", eval_stages.report)))
  work = tmp_path / "w"
  pipeline.run(_config(paths, selection), work)
  sfx = "_oracle" if selection == "oracle" else ""
  metrics = json.loads((work / f"results/metrics{sfx}.json").read_text())
  # Found: MaE 10-50 (onset/offset 15 and 25 frames from the apex, inside 8..29) and ME 20-27
  # (4 and 3 frames, inside 2..8). Missed: the MaE 60-62 (offset := apex, but offsets are
  # searched 8..29 frames after it) and the ME 5-18 (offset 9 frames after its apex).
  s = metrics["scores"]
  assert (s["me"]["tp"], s["me"]["fp"], s["me"]["fn"]) == (1, 0, 1)
  assert (s["mae"]["tp"], s["mae"]["fp"], s["mae"]["fn"]) == (1, 0, 1)
  assert metrics["ground_truth"] == {"mae": 2, "me": 2, "overall": 4}
  assert metrics["oracle"] == (selection == "oracle")
  if selection == "oracle":
    # Subject 2's only expression cannot be found: F1 0 at every epoch, the tie goes to the
    # earliest epoch.
    assert [f["oracle_epoch"] for f in metrics["folds"]] == [2, 1]
    assert metrics["folds"][0]["oracle_f1_per_epoch"]["1"] == 0.0
  with open(work / f"results/submission{sfx}.csv") as f:
    rows = list(csv.DictReader(f))
  assert {(r["vid"], r["onset"], r["offset"], r["type"]) for r in rows} >= {
      ("s15_0401", "10", "50", "mae"), ("s15_0502", "20", "27", "me")}
  report = (work / f"results/report{sfx}.md").read_text()
  assert "| TP | 1 | 1 | 2 |" in report and "| F1-score | 0.6667 | 0.6667 | 0.6667 |" in report
  assert ("ORACLE" in report) == (selection == "oracle")
  assert ("oracle epoch 2" in report) == (selection == "oracle")
  assert (work / f"results/training_curves{sfx}.png").stat().st_size > 1000
  assert len(list((work / "results/plots").glob("*.png"))) == 3
