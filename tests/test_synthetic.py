"""Tests of the synthetic dataset generator (fes_jax/synthetic)."""

import dataclasses
import json
import pathlib
import shutil

import cv2
import numpy as np
import openpyxl
import pytest

from fes_jax.synthetic import checks
from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import face
from fes_jax.synthetic import generate
from fes_jax.synthetic import layout
from fes_jax.synthetic import mesh
from fes_jax.synthetic import motion
from fes_jax.synthetic import plan as plan_lib
from fes_jax.synthetic import render
from fes_jax.synthetic import stats
from fes_jax.synthetic import subject as subject_lib
from fes_jax.synthetic import tracks as tracks_lib

# Dense enough in expressions that 2 short videos give medians of ME and MaE motion.
SMALL = config_lib.preset("tiny", num_subjects=2, num_frames=450, mae_per_minute=14.0,
                          me_per_minute=30.0, min_me_per_video=5, min_mae_per_video=3,
                          me_nested_prob=0.0, workers=1)
MICRO = config_lib.preset("tiny", num_subjects=2, num_frames=24, edge_margin_frames=2,
                          min_mae_per_video=0, mae_per_minute=0.0, min_me_per_video=1,
                          me_per_minute=0.0)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("synth_small")
  generate.generate(root, SMALL, seed=3, workers=1, show_progress=False)
  return root


def _manifest(root: pathlib.Path) -> dict:
  return json.loads((root / layout.MANIFEST_NAME).read_text())


def _video_dirs(root: pathlib.Path, pl: dict) -> tuple[pathlib.Path, np.ndarray]:
  frames = layout.frames_dir(root, pl["participant"], pl["code"])
  return frames, np.load(layout.landmarks_path(root, pl["participant"], pl["code"]))


# --- frozen statistics --------------------------------------------------------------------


def test_frozen_stats_match_the_real_annotations(shared_annotations):
  d = shared_annotations / "casme2"
  derived = stats.derive(d / "CAS(ME)^2code_final.xlsx", d / "video_frame_counts.txt")
  assert derived == stats.frozen()


def test_frozen_stats_describe_casme2():
  s = stats.frozen()
  me, mae = s["durations"]["me"], s["durations"]["mae"]
  assert (min(me), max(me), sum(me.values())) == (9, 17, 57)
  assert (min(mae), max(mae), sum(mae.values())) == (4, 118, 256)
  assert np.median(np.repeat(list(me), list(me.values()))) == 14
  assert len(s["videos"]) == 98
  assert sum(v[3] for v in s["videos"]) == 300 and sum(v[4] for v in s["videos"]) == 57
  lengths = [v[2] for v in s["videos"]]
  assert (min(lengths), max(lengths)) == (659, 4374)


# --- geometry -----------------------------------------------------------------------------


def test_astronaut_landmarks_are_dlibs():
  from fes_jax.preprocess.landmarks import DlibLandmarker
  pts = DlibLandmarker().detect(face.astronaut_rgb())
  assert pts is not None and pts.shape == (68, 2) and pts.dtype == np.float32
  assert np.abs(pts - face.ASTRONAUT_PTS_68x2).max() <= 1.5


def test_mirror_permutation_is_an_involution():
  assert sorted(face.MIRROR_68) == list(range(68))
  assert (face.MIRROR_68[face.MIRROR_68] == np.arange(68)).all()
  m = face.mirror_points(face.ASTRONAUT_PTS_68x2, 512)
  assert m[36, 0] < m[45, 0] and m[48, 0] < m[54, 0]  # index order kept left to right


def test_mesh_warp_puts_source_vertices_at_destination_vertices():
  rng = np.random.default_rng(0)
  grid = np.stack(np.meshgrid(np.arange(80, 600, 60.0), np.arange(60, 440, 60.0)), -1)
  inner = grid.reshape(-1, 2) + rng.uniform(-10, 10, (grid.size // 2, 2))
  pts = np.concatenate([inner, [[0, 0], [639, 0], [0, 479], [639, 479]]])
  tri = mesh.triangulate(pts)
  warper = mesh.MeshWarper(pts, tri, (640, 480), np.array([[1.0, 0, 0], [0, 1.0, 0]]))
  dst = pts.copy()
  dst[:len(inner)] += rng.normal(0, 3.0, (len(inner), 2))
  assert mesh.folded_area(dst, tri) == 0.0
  map_x, map_y = warper.maps(dst)
  aff = mesh.triangle_affines(pts, dst, tri)
  # vertices map exactly: each triangle's affine takes its destination corners to the source
  for t in range(len(tri)):
    corners = np.concatenate([dst[tri[t]], np.ones((3, 1))], 1)
    assert np.allclose(corners @ aff[t].T, pts[tri[t]], atol=1e-6)
  # and every pixel well inside a triangle uses that triangle's affine
  for t in range(len(tri)):
    c_dst = dst[tri[t]].mean(0)
    x, y = np.round(c_dst).astype(int)
    want = aff[t] @ np.array([x, y, 1.0])
    assert np.allclose([map_x[y, x], map_y[y, x]], want, atol=1e-3)
  assert np.allclose(map_x[0, 0], 0, atol=1e-3) and np.allclose(map_y[479, 639], 479, atol=1e-3)


def test_subjects_differ_and_keep_a_valid_mesh():
  cfg = config_lib.preset("default")
  heights, shapes = [], []
  for p in range(1, 7):
    params = subject_lib.sample_params(cfg, plan_lib.rng_for(0, 0, p))
    subj = subject_lib.build(p, params, cfg)
    assert len(subj.tri_Tx3) <= 254
    assert mesh.folded_area(subj.neutral_Vx2, subj.tri_Tx3) <= 30.0
    assert (subj.neutral_Vx2 >= 0).all() and (subj.neutral_Vx2[:, 0] <= 639).all()
    heights.append(face.face_height(subj.neutral_pts_68x2))
    pts = subj.upright_pts_68x2
    shapes.append((pts - pts.mean(0)) / face.face_height(pts))
  assert min(heights) >= 250 and max(heights) <= 300
  spread = [np.abs(a - b).max() for a in shapes for b in shapes if a is not b]
  assert min(spread) > 0.01  # distinct identity warps


def test_au_bases_are_unit_and_sided():
  pts = face.ASTRONAUT_PTS_68x2 * 3
  for au in sorted(motion.SUPPORTED_AUS):
    bases, cap = motion.au_bases(au, pts, np.eye(2))
    both = bases.sum(0)
    assert np.isclose(np.linalg.norm(both, axis=1).max(), 1.0), au
    assert np.abs(bases[0][pts[:, 0] > pts[27, 0] + 20]).max() == 0.0, au  # left side only
  assert np.isfinite(motion.au_bases(43, pts, np.eye(2))[1])


# --- plans ---------------------------------------------------------------------------------


def test_plans_follow_the_real_statistics():
  cfg = config_lib.preset("default")
  intervals = [e for v in plan_lib.video_list(cfg, 0)
               for e in plan_lib.plan_video(cfg, 0, *v[:4])["intervals"]]
  real = stats.frozen()["durations"]
  for e in intervals:
    assert e["duration"] in real[e["type"]]
    assert e["onset"] <= e["apex"] <= e["offset"] == e["onset"] + e["duration"] - 1
    assert set(e["aus"]) <= motion.SUPPORTED_AUS
    lo, hi = (cfg.me_amp_px if e["type"] == "me" else cfg.mae_amp_px)
    assert lo <= e["peak_px"] <= hi
  assert sum(e["type"] == "me" for e in intervals) >= 20
  assert any(max(e["side_gain"]) > min(e["side_gain"]) for e in intervals)  # asymmetric ones


def test_plans_do_not_overlap_except_nested_mes():
  cfg = config_lib.preset("default", me_nested_prob=0.5)
  nested = 0
  for v in plan_lib.video_list(cfg, 1):
    ivs = plan_lib.plan_video(cfg, 1, *v[:4])["intervals"]
    top = [e for e in ivs if not e["nested"]]
    for a, b in zip(top, top[1:]):
      assert a["offset"] + cfg.min_gap_frames < b["onset"]
    for e in ivs:
      if e["nested"]:
        nested += 1
        assert any(h["type"] == "mae" and h["onset"] < e["onset"] and e["offset"] < h["offset"]
                   for h in top)
  assert nested >= 3


def test_full_preset_uses_the_real_videos():
  vids = plan_lib.video_list(config_lib.preset("full"), 0)
  assert len(vids) == 98 and len({v[0] for v in vids}) == 22
  assert sum(v[4][0] for v in vids) == 300 and sum(v[4][1] for v in vids) == 57


def test_distractors_and_no_large_folds():
  cfg = config_lib.preset("default")
  for v in plan_lib.video_list(cfg, 2)[:4]:
    pl = plan_lib.plan_video(cfg, 2, *v[:4])
    params = subject_lib.sample_params(cfg, plan_lib.rng_for(2, 0, v[0]))
    subj = subject_lib.build(v[0], params, cfg)
    tr = tracks_lib.build(pl, subj)
    assert tr.max_folded_px2 < 60.0
    starts = [b["start"] for b in pl["blinks"]]
    assert np.diff(starts).max() <= 6.5 * cfg.fps and len(starts) >= 1200 / (6.5 * cfg.fps)
    nose = tr.vertices_NxVx2[:, face.NOSE_TIP]
    assert np.ptp(nose, axis=0).max() > 2 * cfg.me_amp_px[1]  # head motion > ME motion
  assert any(plan_lib.plan_video(cfg, 2, *v[:4])["talk"] for v in plan_lib.video_list(cfg, 2))


# --- generated dataset ----------------------------------------------------------------------


def _xlsx_rows(path: pathlib.Path) -> dict[str, list[tuple]]:
  wb = openpyxl.load_workbook(path)
  return {ws.title: list(ws.iter_rows(values_only=True)) for ws in wb.worksheets}


def test_xlsx_has_the_casme2_layout(small_dataset):
  sheets = _xlsx_rows(small_dataset / layout.XLSX_NAME)
  assert list(sheets) == ["CASFEcode_final", "naming rule1", "naming rule2"]
  code, rule1 = sheets["CASFEcode_final"], sheets["naming rule1"]
  assert len(code) == len(rule1) > 0
  for row, r1 in zip(code, rule1):
    assert len(row) == 9 and isinstance(row[0], int)
    folder = layout.FOLDER_NUMBERS[row[0] - 1]
    assert r1 == (folder, f"s{folder}", row[0])
    assert row[7] in ("macro-expression", "micro-expression")
    assert isinstance(row[5], int) or "+" in row[5]
    assert row[1].rsplit("_", 1)[0] in {s for s, _ in layout.VIDEO_CODES.values()}
  assert ("0401", "anger1") in sheets["naming rule2"]
  counts = (small_dataset / layout.COUNTS_NAME).read_text().split("\n")
  assert counts[0].split()[1] == "450"


def test_round_trip_through_the_casme2_reader(small_dataset):
  casme2 = pytest.importorskip("fes_jax.data.casme2")
  from fes_jax.data.types import ExprType
  ds = casme2.read(small_dataset / layout.XLSX_NAME, frames_root=small_dataset / "rawpic",
                   frame_counts=small_dataset / layout.COUNTS_NAME)
  man = _manifest(small_dataset)
  assert len(list(ds.videos())) == len(man["videos"]) == 2
  for v in man["videos"]:
    pl = v["plan"]
    video = ds.video(pl["name"])
    assert video.num_frames == pl["num_frames"] == len(video.frames)
    frame = video.frames.read(pl["num_frames"])
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    got = sorted((i.onset, i.apex, i.offset, i.type, i.aus, i.emotion) for i in video.intervals)
    want = sorted((e["onset"], e["apex"], e["offset"],
                   ExprType.ME if e["type"] == "me" else ExprType.MAE,
                   "+".join(map(str, e["aus"])), e["emotion"]) for e in pl["intervals"])
    assert got == want
    _, lms = _video_dirs(small_dataset, pl)
    assert lms.shape == (pl["num_frames"], 68, 2) and lms.dtype == np.float32


def test_dlib_finds_the_ground_truth_landmarks(small_dataset):
  from fes_jax.preprocess.landmarks import DlibLandmarker
  det = DlibLandmarker()
  errors = []
  for v in _manifest(small_dataset)["videos"]:
    frames, lms = _video_dirs(small_dataset, v["plan"])
    prev = None
    for i in range(1, v["plan"]["num_frames"] + 1, 23):
      rgb = cv2.imread(str(frames / layout.frame_file(i)))[:, :, ::-1]
      pts = det.detect(rgb, prev)
      errors.append(np.inf if pts is None else np.linalg.norm(pts - lms[i - 1], axis=1).mean())
      prev = pts
  errors = np.asarray(errors)
  assert len(errors) >= 30
  assert np.mean(errors < 5.0) >= 0.95, np.round(errors, 2)
  assert np.median(errors) < 3.5, np.round(errors, 2)


def test_me_motion_is_between_the_noise_floor_and_mae_motion(small_dataset):
  gray = lambda d, i: cv2.cvtColor(cv2.imread(str(d / layout.frame_file(i))), cv2.COLOR_BGR2GRAY)
  motion_of = {"me": [], "mae": []}
  noise = []
  for v in _manifest(small_dataset)["videos"]:
    pl = v["plan"]
    frames, lms = _video_dirs(small_dataset, pl)
    for e in pl["intervals"]:
      m = checks.roi_motion(gray(frames, e["onset"]), gray(frames, e["apex"]), lms[e["onset"] - 1],
                            checks.expression_regions(e["aus"]))
      motion_of[e["type"]].append(max(m.values()))
    quiet = checks.quiet_frames(pl, gap=5)
    for f in np.random.default_rng(0).choice(quiet, min(8, len(quiet)), replace=False):
      m = checks.roi_motion(gray(frames, int(f)), gray(frames, int(f) + 5), lms[int(f) - 1])
      noise.append(max(m.values()))
  me, mae = np.median(motion_of["me"]), np.median(motion_of["mae"])
  floor = np.median(noise)
  assert len(motion_of["me"]) >= 8 and len(motion_of["mae"]) >= 4 and len(noise) >= 8
  assert me > 1.5 * floor, (me, floor)
  assert mae > 2.5 * me, (mae, me)
  assert me < 2.5  # micro: a couple of pixels at most


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
  a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
  generate.generate(a, MICRO, seed=5, workers=1, show_progress=False)
  generate.generate(b, MICRO, seed=5, workers=2, show_progress=False)
  generate.generate(c, MICRO, seed=6, workers=1, show_progress=False)
  assert _xlsx_rows(a / layout.XLSX_NAME) == _xlsx_rows(b / layout.XLSX_NAME)
  files = sorted(p.relative_to(a) for p in (a / "rawpic").rglob("*.jpg"))
  assert len(files) == 2 * 24
  for rel in files:
    assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
  for p in (a / "landmarks").rglob("*.npy"):
    assert np.array_equal(np.load(p), np.load(b / p.relative_to(a)))
  assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_partial_render_matches_full_render(tmp_path):
  cfg = MICRO
  pl = plan_lib.plan_video(cfg, 5, 1, 0, "0401", cfg.num_frames)
  params = subject_lib.sample_params(cfg, plan_lib.rng_for(5, 0, 1))
  render.render_video(cfg, 5, pl, params, tmp_path / "full")
  render.render_video(cfg, 5, pl, params, tmp_path / "part", frames=range(10, 13))
  names = sorted(p.name for p in (tmp_path / "part").iterdir())
  assert names == ["img10.jpg", "img11.jpg", "img12.jpg"]
  for p in (tmp_path / "part").iterdir():
    assert p.read_bytes() == (tmp_path / "full" / p.name).read_bytes()


def test_rerun_skips_complete_videos_and_redoes_broken_ones(tmp_path):
  root = tmp_path / "d"
  first = generate.generate(root, MICRO, seed=7, workers=1, show_progress=False)
  assert first["rendered"] == 2
  again = generate.generate(root, MICRO, seed=7, workers=1, show_progress=False)
  assert again["rendered"] == 0
  man = _manifest(root)
  pl = man["videos"][0]["plan"]
  frames = layout.frames_dir(root, pl["participant"], pl["code"])
  before = (frames / "img3.jpg").read_bytes()
  (frames / "img24.jpg").unlink()  # a damaged video
  (root / ".synthetic" / "tmp" / "junk").mkdir(parents=True)  # leftovers of a killed run
  redo = generate.generate(root, MICRO, seed=7, workers=1, show_progress=False)
  assert redo["rendered"] == 1
  assert (frames / "img24.jpg").is_file() and (frames / "img3.jpg").read_bytes() == before
  assert not (root / ".synthetic" / "tmp" / "junk").exists()
  other = dataclasses.replace(MICRO, num_subjects=1)
  generate.generate(root, other, seed=7, workers=1, show_progress=False)
  assert len(list((root / "rawpic").glob("*/*"))) == 1  # the stale video is gone
  assert len(_xlsx_rows(root / layout.XLSX_NAME)["naming rule1"]) == len(
      _manifest(root)["videos"][0]["plan"]["intervals"])


def test_killed_run_leaves_no_trusted_outputs(tmp_path, monkeypatch):
  root = tmp_path / "k"
  generate.generate(root, MICRO, seed=8, workers=1, show_progress=False)
  calls = []

  def dying(job):
    calls.append(job)
    raise KeyboardInterrupt

  monkeypatch.setattr(generate, "render_job", dying)
  with pytest.raises(KeyboardInterrupt):
    generate.generate(root, MICRO, seed=9, workers=1, show_progress=False)
  assert calls
  assert not (root / layout.XLSX_NAME).exists() and not (root / layout.MANIFEST_NAME).exists()
  monkeypatch.undo()
  done = generate.generate(root, MICRO, seed=9, workers=1, show_progress=False)
  assert done["rendered"] == 2 and (root / layout.XLSX_NAME).exists()
  shutil.rmtree(root)
