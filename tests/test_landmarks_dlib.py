"""Tests of the dlib landmark detector (fes_jax/preprocess/landmarks.py) on synthetic frames."""

import os

import numpy as np
import pytest

from fes_jax.preprocess import landmarks as landmarks_lib
from fes_jax.synthetic import config as config_lib
from fes_jax.synthetic import plan as plan_lib
from fes_jax.synthetic import render
from fes_jax.synthetic import subject as subject_lib


@pytest.fixture(scope="module")
def frame_and_truth():
  """One noisy, JPEG-compressed synthetic frame (RGB) and its ground-truth landmarks."""
  import cv2
  cfg = config_lib.preset("tiny")
  params = subject_lib.sample_params(cfg, plan_lib.rng_for(0, 0, 1))
  subj = subject_lib.build(1, params, cfg)
  noise = render.NoiseBank(np.random.default_rng(0), (cfg.height, cfg.width, 3), 2.5)
  bgr = render.render_frame(subj, subj.neutral_Vx2, 1.0, noise.sample())
  bgr = cv2.imdecode(np.frombuffer(render.encode_jpeg(bgr, 90), np.uint8), cv2.IMREAD_COLOR)
  return np.ascontiguousarray(bgr[:, :, ::-1]), subj.neutral_pts_68x2.astype(np.float32)


@pytest.fixture(scope="module")
def detector():
  return landmarks_lib.DlibLandmarker()


def _mean_error(a, b):
  return float(np.linalg.norm(a - b, axis=1).mean())


def test_model_file_is_found():
  assert os.path.isfile(landmarks_lib.predictor_path())


def test_detect_finds_the_face(detector, frame_and_truth):
  frame, truth = frame_and_truth
  pts = detector.detect(frame)
  assert pts is not None and pts.shape == (68, 2) and pts.dtype == np.float32
  assert _mean_error(pts, truth) < 4.0


def test_grey_input_and_no_face(detector, frame_and_truth):
  frame, truth = frame_and_truth
  grey = frame.mean(axis=2).astype(np.uint8)
  assert _mean_error(detector.detect(grey), truth) < 4.0
  assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) is None


def test_prev_points_track_when_the_detector_misses(detector, frame_and_truth, monkeypatch):
  frame, truth = frame_and_truth
  shifted = truth + np.float32([6.0, -4.0])  # last frame's landmarks, a little off
  monkeypatch.setattr(detector, "_faces", lambda gray, offset: [])
  assert detector.detect(frame) is None
  pts = detector.detect(frame, shifted)
  assert pts is not None and _mean_error(pts, truth) < 4.0


def test_face_box_from_points_matches_the_detector(detector, frame_and_truth):
  import cv2
  frame, truth = frame_and_truth
  box = detector._faces(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (0, 0))[0]
  guess = landmarks_lib.rect_from_points(truth)
  ix = max(0.0, min(box[2], guess[2]) - max(box[0], guess[0]))
  iy = max(0.0, min(box[3], guess[3]) - max(box[1], guess[1]))
  area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
  assert ix * iy / (area(box) + area(guess) - ix * iy) > 0.7
