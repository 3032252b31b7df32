"""Readers on small files the tests write: layouts, policies and clear errors."""

import collections

import pytest

from fes_jax.data import casme2, casme3, prepared_csv, samm_lv
from fes_jax.data.errors import AnnotationError, FrameSourceError
from fes_jax.data.frame_counts import read_frame_counts
from fes_jax.data.policies import Policies
from fes_jax.data.types import ExprType

import fixtures


def test_casme2_layout_with_frames(tmp_path):
  paths = fixtures.write_casme2_dataset(tmp_path, num_frames=60)
  ds = casme2.read(paths["annotations"], frames_root=paths["frames_root"],
                   frame_counts=paths["frame_counts"])
  assert sorted(ds.subjects) == ["s15", "s16"]
  assert sorted(v.name for v in ds.videos()) == ["s15_0401", "s15_0502", "s16_0401"]
  video = ds.video("s15_0401")
  assert video.num_frames == 60 and len(video.frames) == 60
  assert video.frames.path.name == "15_0401girlcrashing"
  assert [(iv.onset, iv.apex, iv.offset) for iv in video.intervals] == [(10, 15, 40),
                                                                         (50, 55, 55)]
  assert ds.video("s16_0401").intervals[0].type is ExprType.ME
  assert ds.video("s15_0401").intervals[1].aus == "4"


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.__setitem__(0, (1, "anger1_1", "abc", 15, 40, 4, "x", "macro-expression", "")),
     r"sheet 'CASFEcode_final', row 1, field 'onset'.*'abc'"),
    (lambda r: r.__setitem__(1, (1, "anger1_2", 50, 55, 45, 4, "x", "macro-expression", "")),
     r"row 2, field 'offset': onset 50 is after offset 45"),
    (lambda r: r.__setitem__(2, (1, "happy1_1", 20, 25, 33, 12, "x", "tiny-expression", "")),
     r"row 3, field 'type'"),
    (lambda r: r.__setitem__(3, (2, "fury9_1", 5, 9, 18, 7, "x", "micro-expression", "")),
     r"row 4, field 'clip': clip stem 'fury9' not in sheet 'naming rule2'"),
    (lambda r: r.__setitem__(3, ("two", "anger1_1", 5, 9, 18, 7, "x", "micro-expression", "")),
     r"row 4, field 'participant'"),
])
def test_casme2_bad_cells_name_file_sheet_row_field(tmp_path, mutate, match):
  rows = fixtures.casme2_rows()
  mutate(rows)
  path = fixtures.write_casme2_xlsx(tmp_path / "code.xlsx", rows)
  with pytest.raises(AnnotationError, match=match) as info:
    casme2.read(path)
  assert "code.xlsx" in str(info.value)


def test_casme2_missing_sheet(tmp_path):
  path = fixtures.write_casme2_xlsx(tmp_path / "c.xlsx", fixtures.casme2_rows(),
                                    drop_sheet="naming rule2")
  with pytest.raises(AnnotationError, match=r"c.xlsx, sheet 'naming rule2': missing sheet"):
    casme2.read(path)


def test_casme2_video_folder_missing_or_empty(tmp_path):
  paths = fixtures.write_casme2_dataset(tmp_path, num_frames=5)
  for f in (paths["frames_root"] / "s16/16_0401girlcrashing").iterdir():
    f.unlink()
  with pytest.raises(FrameSourceError, match=r"16_0401girlcrashing: video folder has no "
                     r"numbered frames"):
    casme2.read(paths["annotations"], frames_root=paths["frames_root"])
  (paths["frames_root"] / "s16/16_0401girlcrashing").rmdir()
  with pytest.raises(FrameSourceError, match=r"no folder 16_0401\* for video s16_0401"):
    casme2.read(paths["annotations"], frames_root=paths["frames_root"])


def test_beyond_end_policies(tmp_path):
  path = fixtures.write_casme2_xlsx(tmp_path / "c.xlsx", fixtures.casme2_rows())
  counts = {"s15_0401": 30, "s15_0502": 100, "s16_0401": 100}
  ds = casme2.read(path, frame_counts=counts)
  assert [(iv.onset, iv.offset) for iv in ds.video("s15_0401").intervals] == [(10, 30)]
  assert ds.quirks["beyond_end"] == 2 and ds.quirks["dropped"] == 1  # 50.. starts past 30
  with pytest.raises(AnnotationError, match=r"row 1, field 'offset': offset is beyond"):
    casme2.read(path, frame_counts=counts, policies=Policies(beyond_end="error"))
  ds = casme2.read(path, frame_counts=counts, policies=Policies(beyond_end="keep"))
  assert ds.video("s15_0401").intervals[0].offset == 40


def _samm_rows():
  return [
      ("006", "006_1_1", 1, 566.4, 647.6, 743.2, None, "Macro", "4+7", None),
      ("006", "006_1_2", 1, 600, 610, 620, None, "Micro - 1/2", "4", None),  # nested
      ("006", "006_1_3", 1, 0, 20, 40, None, "Macro", "12", None),  # onset 0
      ("006", "006_1_4", 1, 900, -1, 950, None, "Macro", "12", None),  # apex -1
      ("006", "006_1_4", 1, 900, -1, 950, None, "Macro", "12", None),  # exact duplicate
      ("007", "007_2_1", 1, 10, 11, 12.0000000001, None, "Micro - 1/2", "1", None),
  ]


def test_samm_quirk_policies(tmp_path):
  path = fixtures.write_samm_xlsx(tmp_path / "samm.xlsx", _samm_rows())
  ds = samm_lv.read(path)
  # Per-row policies count every row they touch, the duplicate's apex -1 included.
  assert ds.quirks == collections.Counter(fractional=1, nested=1, onset_zero=1, missing_apex=2,
                                          duplicate_row=1, dropped=1)
  v = ds.video("006_1")
  assert [(iv.onset, iv.apex, iv.offset) for iv in v.intervals] == [
      (1, 20, 40), (566, 648, 743), (600, 610, 620), (900, 925, 950)]
  assert ds.video("007_2").intervals[0].offset == 12  # float noise is not fractional

  ds = samm_lv.read(path, policies=Policies(rounding="floor", missing_apex="none",
                                            onset_zero="drop", duplicates="keep",
                                            nested="drop_inner"))
  v = ds.video("006_1")
  assert [(iv.onset, iv.apex, iv.offset) for iv in v.intervals] == [
      (566, 647, 743), (900, None, 950), (900, None, 950)]
  with pytest.raises(AnnotationError, match=r"row 11, field 'onset'.*rounding policy"):
    samm_lv.read(path, policies=Policies(rounding="error"))
  with pytest.raises(AnnotationError, match=r"row 15: duplicate of the row at .*row 14"):
    samm_lv.read(path, policies=Policies(duplicates="error"))
  ds = samm_lv.read(path, policies=Policies(nested="drop_outer"))
  assert [iv.label_id for iv in ds.video("006_1").intervals] == ["006_1_3", "006_1_2",
                                                                  "006_1_4"]


def test_samm_missing_column_and_bad_type(tmp_path):
  header = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Duration", "Type"]
  path = fixtures.write_samm_xlsx(tmp_path / "s.xlsx", _samm_rows(), header=header)
  with pytest.raises(AnnotationError, match=r"sheet 'FACS_Movement_Only': no header row with "
                     r".*row 10 looks like the header but lacks \['offset'\]"):
    samm_lv.read(path)
  rows = _samm_rows()
  rows[1] = ("006", "006_1_2", 1, 600, 610, 620, None, "Mega", "4", None)
  path = fixtures.write_samm_xlsx(tmp_path / "t.xlsx", rows)
  with pytest.raises(AnnotationError, match=r"row 12, field 'Type'"):
    samm_lv.read(path)


def test_casme3_label_xls_with_expression_type(tmp_path):
  import xlwt

  book = xlwt.Workbook()
  sheet = book.add_sheet("label")
  header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class",
            "emotion", "Expression type"]
  rows = [["spNO.1", "a", 120, 130, 140, "4", "III", "disgust", "Micro-expression"],
          ["spNO.1", "a", 300, 320, 400, "12", "I", "happy", "Macro-expression"],
          ["spNO.2", "b", 50, 60, 90, "1+2", "VII", "surprise", None]]
  for i, row in enumerate([header] + rows):
    for j, value in enumerate(row):
      if value is not None:
        sheet.write(i, j, value)
  path = tmp_path / "labels.xls"
  book.save(str(path))
  root = tmp_path / "part_A"
  fixtures.write_frames(root / "spNO.1/a/color", [100, 101, 103, 500], pattern="{}.jpg")
  fixtures.write_frames(root / "spNO.2/b/color", range(40, 95), pattern="{}.jpg")
  ds = casme3.read(path, frames_root=root)
  a = ds.video("spNO.1/a")
  assert [iv.type for iv in a.intervals] == [ExprType.ME, ExprType.MAE]
  assert a.frames.first == 100 and a.frames.missing[:1] == [102] and a.num_frames == 500
  b = ds.video("spNO.2/b").intervals[0]
  assert b.type is ExprType.MAE and ds.quirks["type_from_duration"] == 1
  assert casme3.read(path, type_when_missing="me").video("spNO.2/b").intervals[0].type \
      is ExprType.ME


def test_prepared_csv_index_base(tmp_path):
  path = tmp_path / "p.csv"
  path.write_text("subject,video_name,start_frame,apex_frame,end_frame,type_idx,au\n"
                  "s1,s1_v,0,5,9,2,4\ns1,s1_v,20,30,0,1,12\n")
  one = prepared_csv.read(path, policies=Policies(onset_zero="clip"))
  assert [(iv.onset, iv.offset) for iv in one.video("s1_v").intervals] == [(1, 9), (20, 30)]
  # 0-based: every value shifts by one, so 0 is a real frame and no longer "missing".
  with pytest.raises(AnnotationError, match=r"row 3, field 'offset': onset 21 is after offset 1"):
    prepared_csv.read(path, index_base=0)
  path.write_text("subject,video_name,start_frame,apex_frame,end_frame,type_idx,au\n"
                  "s1,s1_v,0,5,9,2,4\n")
  zero = prepared_csv.read(path, index_base=0)
  assert [(iv.onset, iv.apex, iv.offset) for iv in zero.video("s1_v").intervals] == [(1, 6, 10)]
  path.write_text("subject,video_name,start_frame,apex_frame,end_frame,type_idx,au\n"
                  "s1,s1_v,3,5,9,7,4\n")
  with pytest.raises(AnnotationError, match=r"p.csv, row 2, field 'type_idx'"):
    prepared_csv.read(path)


def test_frame_counts_errors(tmp_path):
  path = tmp_path / "counts.txt"
  path.write_text("s15_0101 2052\ns15_0102 many\n")
  with pytest.raises(AnnotationError, match=r"counts.txt, row 2, field 'frame count'"):
    read_frame_counts(path)
