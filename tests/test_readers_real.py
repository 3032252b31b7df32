"""The readers on the real annotation files in ../shared/annotations (skipped when absent)."""

import collections
import json
import subprocess
import sys

import pytest

from fes_jax.data import casme2, casme3, prepared_csv, samm_lv
from fes_jax.data.frame_counts import read_frame_counts
from fes_jax.data.policies import Policies
from fes_jax.data.summary import summarize
from fes_jax.data.types import ExprType

from conftest import ROOT

CASME2 = "casme2/CAS(ME)^2code_final.xlsx"
SAMM = "samm_lv/SAMM_LongVideos_Release.xlsx"


def _types(ds):
  return collections.Counter(iv.type for _, iv in ds.intervals())


def test_casme2_counts_names_and_quirks(shared_annotations):
  ds = casme2.read(shared_annotations / CASME2,
                   frame_counts=shared_annotations / "casme2/video_frame_counts.txt")
  assert len(ds.subjects) == 22
  assert _types(ds) == {ExprType.MAE: 300, ExprType.ME: 57}
  assert sum(1 for v in ds.videos() if v.intervals) == 95
  assert sum(1 for _ in ds.videos()) == 98  # the frame-count file lists every raw video
  assert ds.quirks["missing_offset"] == 44
  assert ds.quirks["apex_outside"] == 3
  assert ds.quirks["missing_apex"] == 1
  # Participant 1 is s15; anger1 is video code 0401.
  video = ds.video("s15_0401")
  assert video.num_frames == read_frame_counts(
      shared_annotations / "casme2/video_frame_counts.txt")["s15_0401"]
  first = next(iv for iv in video.intervals if iv.label_id == "anger1_1")
  assert (first.onset, first.apex, first.offset, first.type) == (557, 572, 608, ExprType.MAE)
  assert first.aus == "4+10+14" and first.emotion == "negative"
  assert first.source.sheet == "CASFEcode_final" and first.source.row == 1
  # A bare-int AU cell reads as text.
  assert next(iv for iv in video.intervals if iv.label_id == "anger1_2").aus == "38"
  s = summarize(ds)
  assert s["duration_frames"]["mae"]["min"] == 4
  assert s["duration_frames"]["mae"]["median"] == 31
  assert s["duration_frames"]["mae"]["max"] == 118
  assert (s["duration_frames"]["me"]["min"], s["duration_frames"]["me"]["median"],
          s["duration_frames"]["me"]["max"]) == (9, 14, 17)


def test_casme2_missing_offset_policies(shared_annotations):
  def row(policy):
    ds = casme2.read(shared_annotations / CASME2, policies=Policies(missing_offset=policy))
    ivs = [iv for iv in ds.video("s15_0402").intervals if iv.label_id == "anger2_1"]
    return ds, ivs

  _, [iv] = row("apex")
  assert (iv.onset, iv.apex, iv.offset) == (2155, 2163, 2163)
  assert "missing_offset" in iv.flags
  _, [iv] = row("apex_plus_20")
  assert iv.offset == 2183
  _, [iv] = row("unmatchable")
  assert iv.offset is None and iv.length is None
  ds, ivs = row("drop")
  assert ivs == [] and _types(ds)[ExprType.MAE] == 256 and ds.quirks["dropped"] == 44


def test_casme2_xlsx_agrees_with_prepared_csv(shared_annotations):
  """The naming rules reproduce the video names and frames that ABPN / AUW-GCN use."""
  ds = casme2.read(shared_annotations / CASME2, policies=Policies(missing_offset="unmatchable",
                                                                  apex_outside="keep",
                                                                  missing_apex="none"))
  prep = prepared_csv.read(shared_annotations / "prepared/casme2_prepared.csv",
                           policies=Policies(missing_offset="unmatchable", apex_outside="keep",
                                             missing_apex="none"))

  def key(video_name, iv):
    return (video_name, iv.onset, iv.apex, iv.offset, iv.type)

  ours = collections.Counter(key(v.name, iv) for v, iv in ds.intervals())
  theirs = collections.Counter(
      key("s" + v.name.split("_")[1].lstrip("0") + "_" + v.name.split("_")[2], iv)
      for v, iv in prep.intervals())
  assert ours == theirs


def test_samm_counts_and_quirks(shared_annotations):
  ds = samm_lv.read(shared_annotations / SAMM)
  assert len(ds.subjects) == 30
  assert sum(1 for _ in ds.videos()) == 147
  assert _types(ds) == {ExprType.MAE: 343, ExprType.ME: 159}
  assert ds.fps == 200
  q = ds.quirks
  assert q["onset_zero"] == 10 and q["missing_apex"] == 6 and q["duplicate_id"] == 1
  assert q["fractional"] > 100 and q["nested"] > 0
  iv = next(iv for iv in ds.video("006_1").intervals if iv.label_id == "006_1_1")
  assert (iv.onset, iv.apex, iv.offset) == (566, 648, 743)  # 566.4, 647.6, 743.2 rounded
  assert "fractional" in iv.flags
  # The duplicated file id 037_4_1 holds two different intervals: both kept.
  ids = [iv for iv in ds.video("037_4").intervals if iv.label_id == "037_4_1"]
  assert sorted(iv.type.value for iv in ids) == ["mae", "me"]
  # Float noise (3322.9999999999995) is not a fractional frame.
  iv = next(iv for iv in ds.video("011_6").intervals if iv.label_id == "011_6_10")
  assert iv.apex == 3323 and iv.onset == 1 and "onset_zero" in iv.flags


def test_samm_resampling_reproduces_spotformer_csv(shared_annotations):
  """/7 with the default rounding gives SpotFormer's samm_downsampled7.csv (0-based there)."""
  counts = shared_annotations / "samm_lv/video_frame_counts.txt"
  ds = samm_lv.read(shared_annotations / SAMM, frame_counts=counts,
                    policies=Policies(fps_divisor=7, missing_apex="none"))
  prep = prepared_csv.read(shared_annotations / "prepared/samm_downsampled7.csv",
                           index_base=0, fps=200 / 7)
  assert ds.video("006_1").fps == pytest.approx(200 / 7)
  assert ds.video("006_1").num_frames == round((8748 - 1) / 7) + 1
  assert ds.video("006_1").to_original_frame(1) == 1
  assert ds.video("015_3").to_original_frame(102) == 707  # 1 + 101 * 7 = 708, clamped

  ours = collections.Counter((v.name, iv.onset, iv.offset, iv.type) for v, iv in ds.intervals())
  theirs = collections.Counter((v.name.removeprefix("samm_"), iv.onset, iv.offset, iv.type)
                               for v, iv in prep.intervals())
  # The only difference: 012_4_1 (frames 1341.4-1524.6) lies past the 1000 frames that the
  # public frame-count file gives 012_4, so the clip policy drops it.
  assert theirs - ours == collections.Counter({("012_4", 192, 219, ExprType.MAE): 1})
  assert ds.quirks["dropped"] == 1
  assert not ours - theirs
  assert ds.quirks["beyond_end"] >= 2  # 020_6_5 and 036_7_4 are clipped to the last frame
  apexes = {(v.name, iv.onset, iv.offset): iv.apex for v, iv in ds.intervals()}
  prep_apex = {(v.name.removeprefix("samm_"), iv.onset, iv.offset): iv.apex
               for v, iv in prep.intervals()}
  compared = [(k, a) for k, a in apexes.items() if a is not None]
  assert len(compared) > 480
  assert all(prep_apex[k] == a for k, a in compared)


def test_samm_divide_by_8(shared_annotations):
  ds = samm_lv.read(shared_annotations / SAMM, policies=Policies(fps_divisor=8))
  iv = next(iv for iv in ds.video("006_1").intervals if iv.label_id == "006_1_2")
  assert (iv.onset, iv.apex, iv.offset) == (round(3561 / 8) + 1, round(3587 / 8) + 1,
                                            round(3631 / 8) + 1)
  assert ds.video("006_1").fps == 25


def test_casme3_export_and_label_layout(shared_annotations):
  ds = casme3.read(shared_annotations / "casme3/cas3_annotations_filtered_export.csv")
  assert len(ds.subjects) == 97
  assert sum(1 for _ in ds.videos()) == 757
  assert _types(ds) == {ExprType.MAE: 2071, ExprType.ME: 277}
  video = ds.video("001/a")
  assert video.num_frames == 836 and video.intervals[0].onset == 31
  mock = casme3.read(shared_annotations / "casme3/label_format_mock.xlsx")
  assert len(mock.subjects) == 4 and sum(1 for _ in mock.intervals()) == 20
  assert mock.quirks["type_from_duration"] == 20
  iv = mock.video("dzw/a1").intervals[0]
  assert (iv.onset, iv.apex, iv.offset, iv.emotion) == (1, 5, 15, "happy")
  assert dict(iv.extra)["objective_class"] == "II"


@pytest.mark.parametrize("fmt,path,args,expected", [
    ("casme2", CASME2, [], (22, 300, 57)),
    ("samm_lv", SAMM, [], (30, 343, 159)),
    ("samm_lv", SAMM, ["--fps_divisor=7"], (30, 343, 159)),
    ("csv", "prepared/casme2_prepared.csv", [], (22, 300, 57)),
    ("casme3", "casme3/cas3_annotations_filtered_export.csv", [], (97, 2071, 277)),
])
def test_summarize_tool(shared_annotations, fmt, path, args, expected):
  out = subprocess.run(
      [sys.executable, str(ROOT / "tools/summarize_annotations.py"), f"--format={fmt}",
       str(shared_annotations / path), *args], capture_output=True, text=True, check=True)
  summary = json.loads(out.stdout)
  assert (summary["subjects"], summary["mae"], summary["me"]) == expected
  assert set(summary["duration_frames"]) == {"mae", "me"}
  assert isinstance(summary["quirks"], dict)
