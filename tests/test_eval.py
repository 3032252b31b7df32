"""MEGC evaluation, post-processing, frame metrics, submission CSVs, tools/evaluate.py."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fes_jax.eval import frame_metrics, megc, paired, postprocess, submission
from fes_jax.eval.megc import MegcConventions, Span

from conftest import ROOT
import fixtures


@pytest.mark.parametrize("tp,fp,fn,p,r,f1", [
    # SpotFormer Table VII: SAMM-LV MaE, ME, overall; CAS(ME)^2 MaE, ME, overall.
    (163, 227, 180, 0.4179, 0.4752, 0.4447), (61, 65, 98, 0.4841, 0.3836, 0.4281),
    (224, 292, 278, 0.4341, 0.4462, 0.4401), (165, 187, 135, 0.4688, 0.5500, 0.5061),
    (10, 4, 47, 0.7143, 0.1754, 0.2817), (175, 191, 182, 0.4781, 0.4902, 0.4841)])
def test_table_vii_from_counts(tp, fp, fn, p, r, f1):
  s = megc.prf(tp, fp, fn)
  assert (round(s["precision"], 4), round(s["recall"], 4), round(s["f1"], 4)) == (p, r, f1)


def test_table_vii_overall_is_the_sum_of_types():
  c = {"mae": {"tp": 163, "fp": 227, "fn": 180}, "me": {"tp": 61, "fp": 65, "fn": 98}}
  assert round(megc.scores(c)["overall"]["f1"], 4) == 0.4401


def test_iou_conventions():
  a, b = Span("v", 1, 10, "me"), Span("v", 6, 15, "me")
  assert megc.iou(a, b) == pytest.approx(4 / 14)  # exclusive: [1,10) and [6,15)
  assert megc.iou(a, b, "inclusive") == pytest.approx(5 / 15)
  assert megc.iou(a, Span("v", 1, None, "me")) == 0.0


def test_threshold_and_matching_conventions():
  gt = [Span("v", 0, 10, "mae")]
  half = [Span("v", 5, 15, "mae")]  # exclusive IoU 5 / 15
  exact = [Span("v", 0, 5, "mae")]  # exclusive IoU 5 / 10 = 0.5
  assert megc.counts(gt, exact)["mae"] == {"tp": 1, "fp": 0, "fn": 0}
  strict = MegcConventions(threshold_op=">")
  assert megc.counts(gt, exact, strict)["mae"] == {"tp": 0, "fp": 1, "fn": 1}
  assert megc.counts(gt, half)["mae"]["tp"] == 0
  # Greedy in ground-truth order takes g1's best proposal, which g2 needed; optimal gets 2.
  # g1 = [0,10): IoU 10/11 with p1 = [0,11), 9/10 with p2 = [0,9); g2 = [3,13) matches p1 only.
  gts = [Span("v", 0, 10, "me"), Span("v", 3, 13, "me")]
  preds = [Span("v", 0, 11, "me"), Span("v", 0, 9, "me")]
  greedy = megc.counts(gts, preds)["me"]
  optimal = megc.counts(gts, preds, MegcConventions(matching="optimal"))["me"]
  assert greedy == {"tp": 1, "fp": 1, "fn": 1} and optimal == {"tp": 2, "fp": 0, "fn": 0}


def test_types_are_separate_and_each_match_counts_once():
  gts = [Span("v", 10, 20, "me"), Span("w", 10, 20, "mae")]
  preds = [Span("v", 10, 20, "mae"), Span("v", 10, 20, "me"), Span("v", 11, 20, "me")]
  c = megc.counts(gts, preds)
  assert c["me"] == {"tp": 1, "fp": 1, "fn": 0}
  assert c["mae"] == {"tp": 0, "fp": 1, "fn": 1}
  by_length = megc.counts(gts, [Span("v", 10, 20, "mae")],
                          MegcConventions(type_from="length"))  # 11 frames -> ME
  assert by_length["me"]["tp"] == 1 and by_length["mae"]["fp"] == 0
  assert megc.scores(megc.add_counts(c, c))["me"]["tp"] == 2


def test_paired_comparison_per_ground_truth_and_mcnemar():
  # The greedy / optimal case above: greedy finds g1 only, optimal finds both.
  gts = [Span("v", 0, 10, "me"), Span("v", 3, 13, "me")]
  preds = [Span("v", 0, 11, "me"), Span("v", 0, 9, "me")]
  assert megc.matched(gts, preds, MegcConventions()) == [True, False]
  assert megc.matched(gts, preds, MegcConventions(matching="optimal")) == [True, True]
  gts += [Span("w", 20, 30, "me"), Span("w", 40, 50, "me"), Span("w", 0, 60, "mae")]
  a = preds + [Span("w", 20, 30, "me"), Span("w", 0, 60, "mae")]  # finds g1, w20, the MaE
  b = [Span("v", 5, 15, "me"), Span("w", 40, 50, "me"), Span("x", 1, 5, "me")]  # g2, w40
  c = paired.compare(gts, a, b)
  assert {k: c["me"][k] for k in ("both", "only_a", "only_b", "neither")} == {
      "both": 0, "only_a": 2, "only_b": 2, "neither": 0}
  assert {k: c["mae"][k] for k in ("both", "only_a", "only_b", "neither")} == {
      "both": 0, "only_a": 1, "only_b": 0, "neither": 0}
  assert c["me"]["p"] == 1.0 and c["mae"]["p"] == 1.0
  same = paired.compare(gts, a, a)["me"]
  assert (same["both"], same["only_a"], same["only_b"], same["neither"]) == (2, 0, 0, 2)
  # Exact two-sided McNemar: 5 vs 0 discordant -> 2 / 2^5; 22 vs 12 -> 0.1214 (README).
  assert paired.mcnemar_exact(5, 0) == pytest.approx(0.0625)
  assert paired.mcnemar_exact(0, 5) == pytest.approx(0.0625)
  assert paired.mcnemar_exact(22, 12) == pytest.approx(0.1214, abs=1e-4)
  assert paired.mcnemar_exact(0, 0) == 1.0 and paired.mcnemar_exact(3, 3) == 1.0


def _probs(n, apexes, onsets, offsets, kind="me"):
  p = np.zeros((n, 10), np.float32)
  ch = postprocess.CHANNELS[kind]
  p[:, ch["none"]] = 1.0
  for a in apexes:
    p[a, ch["apex"]] = 0.9
  for o in onsets:
    p[o, ch["onset"]], p[o, ch["none"]] = 0.8, 0.2
  for o in offsets:
    p[o, ch["offset"]], p[o, ch["none"]] = 0.7, 0.3
  return p


def test_postprocess_finds_the_interval_around_an_apex():
  p = _probs(60, apexes=[30, 31], onsets=[25], offsets=[36])
  frames = np.arange(1, 61)
  spans = postprocess.spot_video(p, frames, "v")
  assert [(s.onset, s.offset, s.type) for s in spans] == [(26, 37, "me")]  # 1-based frames
  assert spans[0].score == pytest.approx(0.8 * 0.9 * 0.7)
  # An onset outside the ME search window (2..8 frames before the apex) is not used.
  p = _probs(60, apexes=[30], onsets=[10], offsets=[36])
  assert postprocess.spot_video(p, frames, "v") == []


def test_nms_and_top_k():
  spans = [Span("v", 0, 10, "me", 0.9), Span("v", 1, 11, "me", 0.8),
           Span("v", 30, 40, "me", 0.7), Span("v", 50, 60, "me", 0.6)]
  kept = postprocess.nms(spans, 0.5, top_k=2)
  assert [(s.onset, s.score) for s in kept] == [(0, 0.9), (30, 0.7)]


def test_probabilities_from_logits():
  logits = np.zeros((2, 10), np.float32)
  logits[0, 0] = np.log(2.0)  # ME onset twice as likely as offset / none
  prob = postprocess.probabilities(logits)
  np.testing.assert_allclose(prob[0, :3], [0.5, 0.25, 0.25], rtol=1e-6)
  np.testing.assert_allclose(prob[:, 6:], 0.5)


def test_edit_score_and_frame_accuracy_on_known_sequences():
  gt = [0, 0, 1, 1, 1, 0, 2, 2, 0]
  assert frame_metrics.segments(gt) == [0, 1, 0, 2, 0]
  assert frame_metrics.edit_score(gt, gt) == 100.0
  pred = [0, 0, 0, 1, 1, 0, 0, 0, 0]  # misses the ME segment: 2 deletions of 5
  assert frame_metrics.edit_score(pred, gt) == pytest.approx(60.0)
  assert frame_metrics.frame_accuracy(np.array(pred), np.array(gt)) == pytest.approx(6 / 9)
  assert frame_metrics.levenshtein([1, 2, 3], [1, 3]) == 1
  labels = frame_metrics.intervals_to_frames([Span("v", 2, 5, "mae"), Span("v", 4, 4, "me")], 6)
  np.testing.assert_array_equal(labels, [0, 1, 1, 2, 1, 0])


def test_submission_round_trip_and_errors(tmp_path):
  spans = [Span("s15_0401", 10, 40, "mae"), Span("s15_0401", 5, 9, "me")]
  submission.write_csv(tmp_path / "p.csv", spans)
  assert (tmp_path / "p.csv").read_text().splitlines()[0] == "vid,onset,offset,type"
  assert submission.read_csv(tmp_path / "p.csv") == sorted(spans, key=lambda s: s.onset)
  (tmp_path / "bad.csv").write_text("vid,onset,offset,type\nv,10,5,me\n")
  with pytest.raises(Exception, match=r"bad.csv, row 2, field 'offset'"):
    submission.read_csv(tmp_path / "bad.csv")


def test_evaluate_tool_on_a_fixture(tmp_path):
  paths = fixtures.write_casme2_dataset(tmp_path / "data", num_frames=60)
  # Ground truth: s15_0401 MaE 10-40 and 50-55 (offset from apex), ME 20-33 (s15_0502),
  # ME 5-18 (s16_0401). Predict one MaE exactly, one ME exactly, one wrong.
  pred = tmp_path / "pred.csv"
  submission.write_csv(pred, [Span("s15_0401", 10, 40, "mae"), Span("s16_0401", 5, 18, "me"),
                              Span("s15_0502", 40, 50, "me")])
  out = subprocess.run([sys.executable, str(ROOT / "tools/evaluate.py"), f"--pred={pred}",
                        f"--gt={paths['annotations']}", "--format=casme2"],
                       capture_output=True, text=True, check=True)
  result = json.loads(out.stdout)
  assert result["scores"]["mae"]["tp"] == 1 and result["scores"]["mae"]["fn"] == 1
  assert result["scores"]["me"] == pytest.approx(
      {"tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5})
  assert result["scores"]["overall"]["tp"] == 2

  other = tmp_path / "other.csv"  # finds the s15_0502 ME instead of the s16_0401 one
  submission.write_csv(other, [Span("s15_0502", 20, 33, "me")])
  out = subprocess.run([sys.executable, str(ROOT / "tools/evaluate.py"), f"--pred={pred}",
                        f"--compare={other}", f"--gt={paths['annotations']}",
                        "--format=casme2"], capture_output=True, text=True, check=True)
  compared = json.loads(out.stdout)
  assert compared["scores"] == result["scores"]
  assert compared["compare"]["other_scores"]["me"]["tp"] == 1
  me = compared["compare"]["paired"]["me"]
  assert (me["both"], me["only_a"], me["only_b"], me["neither"]) == (0, 1, 1, 0)


def test_evaluate_tool_on_the_real_samm_file(shared_annotations, tmp_path):
  """Submitting the ground truth itself scores F1 = 1 under every convention."""
  from fes_jax.data import samm_lv

  ds = samm_lv.read(shared_annotations / "samm_lv/SAMM_LongVideos_Release.xlsx")
  pred = tmp_path / "gt.csv"
  submission.write_csv(pred, submission.ground_truth(ds))
  for extra in ([], ["--length=inclusive", "--matching=optimal"]):
    out = subprocess.run([sys.executable, str(ROOT / "tools/evaluate.py"), f"--pred={pred}",
                          f"--gt={shared_annotations / 'samm_lv/SAMM_LongVideos_Release.xlsx'}",
                          "--format=samm_lv", *extra], capture_output=True, text=True,
                         check=True)
    s = json.loads(out.stdout)["scores"]
    assert (s["mae"]["tp"], s["me"]["tp"], s["overall"]["f1"]) == (343, 159, 1.0)
