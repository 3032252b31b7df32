"""Small annotation files and frame folders in the real layouts, written by the tests."""

from __future__ import annotations

import pathlib

import numpy as np

# A plausible 68-point layout (dlib order) for a face whose inner eye corners are 80 px apart,
# centred at (320, 200) in a 640 x 480 frame: dlib's landmarks of scikit-image's astronaut,
# scaled (values rounded; only the geometry matters here).
LM = np.array([
    [-98, -8], [-97, 18], [-94, 44], [-88, 70], [-76, 95], [-56, 115], [-34, 130], [-8, 141],
    [21, 143], [48, 137], [71, 122], [90, 102], [102, 78], [108, 51], [110, 23], [110, -5],
    [108, -32], [-87, -52], [-73, -67], [-53, -72], [-32, -69], [-12, -61], [25, -63],
    [46, -72], [67, -74], [88, -68], [101, -53], [6, -32], [6, -12], [5, 7], [5, 27],
    [-18, 39], [-6, 43], [7, 46], [19, 43], [30, 38], [-67, -29], [-55, -37], [-41, -37],
    [-28, -28], [-41, -24], [-55, -24], [41, -28], [53, -37], [67, -37], [80, -29],
    [68, -23], [54, -23], [-40, 79], [-23, 70], [-7, 64], [6, 67], [19, 64], [36, 70],
    [53, 79], [37, 93], [20, 100], [6, 102], [-8, 100], [-24, 93], [-33, 79], [-7, 75],
    [6, 76], [19, 75], [46, 79], [19, 85], [6, 87], [-7, 85]], np.float64)
LM[:, 0] = (LM[:, 0] - (LM[39, 0] + LM[42, 0]) / 2) * 80 / (LM[42, 0] - LM[39, 0]) + 320
LM[:, 1] = LM[:, 1] - (LM[39, 1] + LM[42, 1]) / 2 + 200


def texture(seed=0):
  import cv2

  rng = np.random.default_rng(seed)
  tex = cv2.GaussianBlur(rng.uniform(0, 255, (480, 640)).astype(np.float32), (0, 0), 2.0)
  return cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def shift(image, tx, ty):
  import cv2

  m = np.float32([[1, 0, tx], [0, 1, ty]])
  return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)



CASME2_CODES = (("0401", "anger1"), ("0502", "happy1"))


def write_casme2_xlsx(path: pathlib.Path, rows, *, folders=((15, "s15", 1), (16, "s16", 2)),
                      codes=CASME2_CODES, drop_sheet: str | None = None) -> pathlib.Path:
  """CAS(ME)^2 coding file: ``rows`` are 9-tuples of the CASFEcode_final sheet."""
  import openpyxl

  book = openpyxl.Workbook()
  code = book.active
  code.title = "CASFEcode_final"
  rule1 = book.create_sheet("naming rule1")
  rule2 = book.create_sheet("naming rule2")
  by_participant = {p: (n, f) for n, f, p in folders}
  for row in rows:
    code.append(list(row))
    n, f = by_participant.get(row[0], (99, "s99"))
    rule1.append([n, f, row[0]])
  for c, stem in codes:
    rule2.append([int(c), stem])  # codes stored as ints, as in the real file
  if drop_sheet:
    del book[drop_sheet]
  book.save(path)
  return path


def casme2_rows():
  return [
      (1, "anger1_1", 10, 15, 40, "4+10", "negative", "macro-expression", "anger"),
      (1, "anger1_2", 50, 55, 0, 4, "negative", "macro-expression", "anger"),
      (1, "happy1_1", 20, 25, 33, 12, "positive", "micro-expression", "happiness"),
      (2, "anger1_1", 5, 9, 18, 7, "others", "micro-expression", "anger"),
  ]


def write_frames(folder: pathlib.Path, numbers, *, pattern="img{}.jpg", size=(24, 32)):
  """Writes small JPEGs whose mean intensity encodes the frame number."""
  import cv2

  folder.mkdir(parents=True, exist_ok=True)
  for n in numbers:
    image = np.full((*size, 3), (n * 7) % 256, np.uint8)
    assert cv2.imwrite(str(folder / pattern.format(n)), image)
  return folder


def write_face_video(folder: pathlib.Path, landmarks_file: pathlib.Path, num_frames: int,
                     *, seed: int = 0, drift=(0.05, -0.03)) -> None:
  """A textured 640 x 480 'face' video drifting slowly, and its (N, 68, 2) landmark file."""
  import cv2

  folder.mkdir(parents=True, exist_ok=True)
  tex = texture(seed)
  for k in range(num_frames):
    assert cv2.imwrite(str(folder / f"img{k + 1}.jpg"), shift(tex, drift[0] * k, drift[1] * k),
                       [cv2.IMWRITE_JPEG_QUALITY, 95])
  landmarks_file.parent.mkdir(parents=True, exist_ok=True)
  np.save(landmarks_file, np.stack([LM + [drift[0] * k, drift[1] * k]
                                    for k in range(num_frames)]).astype(np.float32))


def write_casme2_dataset(root: pathlib.Path, num_frames: int = 60,
                         faces: bool = False) -> dict[str, pathlib.Path]:
  """A complete tiny CAS(ME)^2-layout dataset: xlsx, rawpic folders, frame counts; with
  ``faces``, textured frames and ground-truth landmark files under ``root/landmarks``."""
  root.mkdir(parents=True, exist_ok=True)
  xlsx = write_casme2_xlsx(root / "CAS(ME)^2code_final.xlsx", casme2_rows())
  raw = root / "rawpic"
  for i, folder in enumerate(("s15/15_0401girlcrashing", "s15/15_0502funnyerrors",
                              "s16/16_0401girlcrashing")):
    if faces:
      write_face_video(raw / folder, root / "landmarks" / f"{folder}.npy", num_frames, seed=i)
    else:
      write_frames(raw / folder, range(1, num_frames + 1))
  counts = root / "video_frame_counts.txt"
  counts.write_text("".join(f"{v} {num_frames}\n" for v in ("s15_0401", "s15_0502",
                                                             "s16_0401")))
  return {"annotations": xlsx, "frames_root": raw, "frame_counts": counts,
          "landmarks_root": root / "landmarks"}


def main_flags(paths) -> list[str]:
  """fes_jax.main overrides of a tiny run on ``write_casme2_dataset``'s data (2 epochs of 2
  steps)."""
  return [f"--config.dataset.annotations={paths['annotations']}",
          f"--config.dataset.frames_root={paths['frames_root']}",
          f"--config.dataset.frame_counts={paths['frame_counts']}",
          "--config.preprocess.landmarks=file",
          f"--config.preprocess.landmarks_root={paths['landmarks_root']}",
          "--config.preprocess.face_size=128", "--config.preprocess.workers=1",
          "--config.train.epochs=2", "--config.train.steps_per_epoch=2",
          "--config.train.batch_segments=8", "--config.eval.plots=0"]


def write_samm_xlsx(path: pathlib.Path, rows, *, header=None) -> pathlib.Path:
  """SAMM-LV FACS file: 9 preamble rows, header on row 10."""
  import openpyxl

  book = openpyxl.Workbook()
  ws = book.active
  ws.title = "FACS_Movement_Only"
  ws.append(["SAMM Long Videos Dataset - FACS Codes"])
  for _ in range(8):
    ws.append([None])
  ws.append(header or ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                       "Duration", "Type", "Action Units", "Notes"])
  for r in rows:
    ws.append(list(r))
  book.save(path)
  return path
