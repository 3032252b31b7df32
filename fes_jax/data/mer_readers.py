"""Micro-expression recognition (MER) datasets: one clip record type, three readers, labels.

Every reader returns a list of :class:`MerClip` (subject, clip, onset, apex, offset, AUs,
emotion, dataset), sorted by (subject, clip). Frame numbers are the numbers in the frame file
names (``img46.jpg`` -> 46, ``006_05562.jpg`` -> 5562, ``image046796.bmp`` -> 46796), which is
what the coding files refer to; they are inclusive. A bad row or folder raises an
:class:`~fes_jax.data.errors.AnnotationError` / ``FrameSourceError`` naming file, sheet, row
and field.

Formats (as the releases document them; header names are matched ignoring case, spaces and
punctuation, extra columns are ignored, the header row is searched in the first 30 rows):

* CASME II ``CASME2-coding-20140508.xlsx``: one sheet, header on row 1: Subject (1..26, the
  folder ``sub01``), Filename (``EP02_01f``), OnsetFrame, ApexFrame, OffsetFrame, Action Units
  (``4+7``, sometimes a bare int or with L/R prefixes), Estimated Emotion (happiness, disgust,
  repression, surprise, others, fear, sadness). The real file also has unnamed columns
  (pandas users read it with ``usecols=[0, 1, 3, 4, 5, 7, 8]``) and a few ApexFrame cells that
  hold ``/`` (no apex coded): read as ``apex=None``. Frames:
  ``<frames_root>/sub01/EP02_01f/img46.jpg`` (``CASME2_RAW_selected``; the ``Cropped`` release
  names them ``reg_img46.jpg``; both parse).
* SAMM ``SAMM_Micro_FACS_Codes_v2.xlsx``: one sheet; a preamble (title and notes; 13 rows in
  the release, which pandas users skip with ``skiprows=range(13)``), then the header: Subject
  (6 -> folder ``006``), Filename (``006_1_2``), Inducement Code, Onset Frame, Apex Frame,
  Offset Frame, Duration, Type, Action Units, Notes, Estimated Emotion (Anger, Contempt,
  Disgust, Fear, Happiness, Other, Sadness, Surprise), Objective Classes (the column order
  differs between copies; only the names matter here). Frames:
  ``<frames_root>/006/006_1_2/006_05562.jpg``. An Apex Frame of ``-1`` (as in SAMM-LV) is read
  as ``apex=None``.
* SMIC (SMIC-HS, and the HS/VIS/NIR folders of SMIC-E): no coding file; the folder structure
  ``<root>/<subject>/micro/<positive|negative|surprise>/<clip>/image046796.bmp`` is the
  annotation (``root`` is e.g. ``SMIC_all_raw/HS``; subjects ``s1`` .. ``s20``, 16 of them in
  HS; clips ``s1_po_01``, ``s3_ne_02``, ``s9_sur_03``, whose code must agree with the class
  folder). onset / offset are the clip's first / last frame number, apex is None (not coded),
  AUs empty (not coded). ``non_micro`` folders are ignored.

Labels (``label_index``), class orders as the MOL authors' code (``dataset.py``) lists its
class folders, so confusion matrices line up with its logs:

* ``"3"``: MEGC 2019 composite classes (See et al., FG 2019): positive = happiness; negative =
  repression, anger, contempt, disgust, fear, sadness; surprise = surprise; everything else
  (others, SAMM's Other) excluded. :data:`CLASSES3` = (surprise, positive, negative).
  CASME II: only disgust and repression are mapped to negative (fear and sadness are left
  out): the composite's CASME II counts (negative 88, positive 32, surprise 25; MOL Table III)
  are consistent with disgust + repression (63 + 27 in MOL Table II, 2 of 26 subjects dropped)
  and not with adding fear (2) and sadness (4 - 7); ``MEGC3['casme2']`` is the one place to
  change if your protocol differs. SAMM: anger, contempt, disgust, fear, sadness -> negative
  (57 + 12 + 9 + 8 + 6 = 92, as in Table III). SMIC: its own three classes.
* ``"5"``: the five-class protocol of MOL Sec. 4.1.1 (after Graph-TCN / AU-GACN): CASME II
  (surprise, happiness, disgust, repression, others); SAMM (surprise, happiness, anger,
  contempt, others); other emotions excluded. SMIC has no five-class protocol.
Excluded clips get label -1.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Iterable, Sequence

from fes_jax.data import spreadsheet as ss
from fes_jax.data.errors import AnnotationError, FrameSourceError
from fes_jax.data.frames import ImageFolder
from fes_jax.data.types import SourceRef

DATASETS = ("casme2", "samm", "smic", "synthetic")
FPS = {"casme2": 200.0, "samm": 200.0, "smic": 100.0}  # SMIC-HS; VIS / NIR are 25 fps

CLASSES3 = ("surprise", "positive", "negative")
CLASSES5 = {
    "casme2": ("surprise", "happiness", "disgust", "repression", "others"),
    "samm": ("surprise", "happiness", "anger", "contempt", "others"),
    "synthetic": ("surprise", "happiness", "disgust", "repression", "others"),
}
EMOTIONS = {  # every estimated-emotion value a dataset may hold (normalised spelling)
    "casme2": ("happiness", "disgust", "repression", "surprise", "others", "fear", "sadness"),
    "samm": ("anger", "contempt", "disgust", "fear", "happiness", "others", "sadness",
             "surprise"),
    "smic": ("positive", "negative", "surprise"),
}
EMOTIONS["synthetic"] = EMOTIONS["casme2"]
MEGC3 = {
    "casme2": {"happiness": "positive", "disgust": "negative", "repression": "negative",
               "surprise": "surprise"},
    "samm": {"happiness": "positive", "anger": "negative", "contempt": "negative",
             "disgust": "negative", "fear": "negative", "sadness": "negative",
             "surprise": "surprise"},
    "smic": {"positive": "positive", "negative": "negative", "surprise": "surprise"},
}
MEGC3["synthetic"] = MEGC3["casme2"]
_SPELLING = {"other": "others", "happy": "happiness", "disgusted": "disgust",
             "surprised": "surprise", "sad": "sadness", "angry": "anger"}
SMIC_CLASS_CODES = {"po": "positive", "ne": "negative", "sur": "surprise"}


@dataclasses.dataclass(frozen=True)
class MerClip:
  """One annotated micro-expression clip.

  Attributes:
    dataset: ``casme2``, ``samm``, ``smic`` or ``synthetic``.
    subject: the subject's folder name (``sub01``, ``006``, ``s1``).
    clip: the clip's folder name (``EP02_01f``, ``006_1_2``, ``s1_ne_01``).
    onset, apex, offset: 1-based frame numbers as in the frame file names, inclusive;
      ``apex`` None when not coded.
    aus: the AU cell as text (``4+7``), empty when not coded.
    emotion: the dataset's estimated emotion, lower case (SAMM's ``Other`` -> ``others``).
    frames: the clip's frame folder, when known.
    source: the row (or folder) the record came from.
    extra: dataset-specific fields, e.g. ``(("objective_class", "I"),)``.
  """

  dataset: str
  subject: str
  clip: str
  onset: int
  apex: int | None
  offset: int
  aus: str
  emotion: str
  frames: str | None = None
  source: SourceRef | None = None
  extra: tuple[tuple[str, Any], ...] = ()

  @property
  def key(self) -> str:
    return f"{self.dataset}/{self.subject}/{self.clip}"

  @property
  def emotion3(self) -> str | None:
    """The MEGC 2019 class (positive / negative / surprise), None when excluded."""
    return MEGC3.get(self.dataset, {}).get(self.emotion)

  def label(self, scheme: str) -> int:
    return label_index(self, scheme)


def classes(scheme: str, dataset: str) -> tuple[str, ...]:
  """Class names of ``scheme`` (``"3"`` or ``"5"``) in label order."""
  if scheme == "3":
    return CLASSES3
  if scheme == "5":
    if dataset not in CLASSES5:
      raise ValueError(f"dataset {dataset!r} has no five-class protocol")
    return CLASSES5[dataset]
  raise ValueError(f"label scheme must be '3' or '5', got {scheme!r}")


def label_index(clip: MerClip, scheme: str) -> int:
  """The clip's class index under ``scheme``; -1 when the scheme excludes its emotion."""
  if scheme == "3":
    e3 = clip.emotion3
    return CLASSES3.index(e3) if e3 is not None else -1
  if scheme == "5":
    names = CLASSES5.get(clip.dataset)
    return names.index(clip.emotion) if names and clip.emotion in names else -1
  raise ValueError(f"label scheme must be '3' or '5', got {scheme!r}")


def normalise_emotion(value: Any) -> str:
  text = ss.text(value).lower()
  return _SPELLING.get(text, text)


# ----------------------------------------------------------------------------------------------
# Shared cell parsing


def _key(name: Any) -> str:
  """Header text -> lower-case letters and digits only (``'Onset Frame'`` -> ``onsetframe``)."""
  return re.sub(r"[^a-z0-9]", "", str(name or "").lower())


def find_columns(rows: Sequence[ss.Row], columns: dict[str, tuple[str, ...]],
                 required: Iterable[str], *, file: Any, sheet: str | None,
                 search_rows: int = 30) -> tuple[int, dict[str, int]]:
  """The header row (0-based) and ``{field: column}`` for ``columns`` (field -> aliases)."""
  required = list(required)
  best: tuple[int, list[str]] | None = None
  for i, row in enumerate(rows[:search_rows]):
    keys = [_key(c) for c in row]
    found = {}
    for field, aliases in columns.items():
      for alias in aliases:
        if _key(alias) in keys:
          found[field] = keys.index(_key(alias))
          break
    missing = [f for f in required if f not in found]
    if not missing:
      return i, found
    if best is None or len(missing) < len(best[1]):
      best = (i, missing)
  detail = ""
  if best is not None and len(best[1]) < len(required):
    detail = f"; row {best[0] + 1} looks like the header but lacks {best[1]}"
  raise AnnotationError(f"no header row with columns {[columns[f][0] for f in required]} in "
                        f"the first {search_rows} rows{detail}", file=file, sheet=sheet)


def _frame(value: Any, *, where: dict, field: str, allow_missing: Sequence[str] = (),
           missing_ints: Sequence[int] = ()) -> int | None:
  """A frame-number cell -> int (None for the listed 'not coded' markers)."""
  if value is None or (isinstance(value, str) and not value.strip()):
    if allow_missing:
      return None
    raise AnnotationError("frame number is empty", field=field, **where)
  if isinstance(value, str) and value.strip() in allow_missing:
    return None
  if isinstance(value, bool):
    raise AnnotationError("expected a frame number", field=field, value=value, **where)
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise AnnotationError("expected a frame number", field=field, value=value,
                          **where) from None
  if not number.is_integer():
    raise AnnotationError("frame number is not an integer", field=field, value=value, **where)
  if int(number) in missing_ints:
    return None
  if number < 0:
    raise AnnotationError("frame number is negative", field=field, value=value, **where)
  return int(number)


def _check_order(onset: int, apex: int | None, offset: int, where: dict) -> None:
  if offset < onset:
    raise AnnotationError(f"offset {offset} is before onset {onset}", field="offset", **where)
  if apex is not None and not onset <= apex <= offset:
    raise AnnotationError(f"apex {apex} is outside onset..offset {onset}..{offset}",
                          field="apex", **where)


def _emotion(value: Any, dataset: str, where: dict, field: str) -> str:
  emotion = normalise_emotion(value)
  if emotion not in EMOTIONS[dataset]:
    raise AnnotationError(f"unknown emotion; expected one of {list(EMOTIONS[dataset])}",
                          field=field, value=value, **where)
  return emotion


def _subject_number(value: Any, *, prefix: str, where: dict) -> int:
  text = ss.text(value)
  match = re.fullmatch(rf"(?:{prefix})?0*(\d+)", text, flags=re.IGNORECASE)
  if not match:
    raise AnnotationError("subject must be a number", field="subject", value=value, **where)
  return int(match.group(1))


def _frames_folder(frames_root: str | os.PathLike | None, subject: str, clip: str,
                   where: dict) -> str | None:
  if frames_root is None:
    return None
  folder = pathlib.Path(frames_root) / subject / clip
  if not folder.is_dir():
    raise FrameSourceError(f"frame folder of clip {subject}/{clip} ({where['file']}, row "
                           f"{where['row']}) does not exist", file=folder)
  return str(folder)


def _workbook_rows(path: pathlib.Path, columns, required) -> tuple[str, int, dict, list]:
  """The first sheet holding a header with the ``required`` columns."""
  sheets = ss.load_sheets(path)
  errors = []
  for name, rows in sheets.items():
    try:
      header, cols = find_columns(rows, columns, required, file=path, sheet=name)
      return name, header, cols, rows
    except AnnotationError as e:
      errors.append(str(e))
  raise AnnotationError("no sheet has the expected header: " + " | ".join(errors), file=path)


def _finish(clips: list[MerClip], file: Any) -> list[MerClip]:
  if not clips:
    raise AnnotationError("no clips", file=file)
  seen: dict[tuple[str, str], MerClip] = {}
  for c in clips:
    prev = seen.setdefault((c.subject, c.clip), c)
    if prev is not c:
      raise AnnotationError(f"clip {c.subject}/{c.clip} appears twice (also {prev.source})",
                            file=c.source.file, sheet=c.source.sheet, row=c.source.row)
  return sorted(clips, key=lambda c: (c.dataset, c.subject, c.clip))


# ----------------------------------------------------------------------------------------------
# CASME II

CASME2_COLUMNS = {
    "subject": ("Subject",), "filename": ("Filename", "File name"),
    "onset": ("OnsetFrame", "Onset Frame", "Onset"),
    "apex": ("ApexFrame", "Apex Frame", "Apex"),
    "offset": ("OffsetFrame", "Offset Frame", "Offset"),
    "aus": ("Action Units", "AUs", "AU"),
    "emotion": ("Estimated Emotion", "Emotion"),
}
_REQUIRED = ("subject", "filename", "onset", "apex", "offset", "emotion")


@dataclasses.dataclass(frozen=True)
class _CodedRow:
  """One checked row of a CASME II / SAMM coding sheet."""

  row: int  # 1-based, as a spreadsheet shows it
  get: Any  # field name -> cell value
  where: dict
  subject: str
  clip: str
  onset: int
  apex: int | None
  offset: int


def _coded_rows(path: pathlib.Path, sheet: str | None, header: int, cols: dict[str, int],
                rows: Sequence[Sequence[Any]], *, subject_prefix: str, subject_width: int,
                apex_missing_ints: tuple[int, ...] = ()) -> Iterable[_CodedRow]:
  """Every non-blank row after the header: subject (``<prefix><number>``, zero-padded to
  ``subject_width``), file name, onset <= apex <= offset, each error naming file/sheet/row."""
  for i in range(header + 1, len(rows)):
    row = rows[i]
    if ss.is_blank(row):
      continue
    where = dict(file=path, sheet=sheet, row=i + 1)

    def get(f, row=row):
      return ss.cell(row, cols.get(f))

    number = _subject_number(get("subject"), prefix=subject_prefix, where=where)
    clip = ss.text(get("filename"))
    if not clip:
      raise AnnotationError("filename is empty", field="filename", **where)
    onset = _frame(get("onset"), where=where, field="onset")
    apex = _frame(get("apex"), where=where, field="apex", allow_missing=("/", "-"),
                  missing_ints=apex_missing_ints)
    offset = _frame(get("offset"), where=where, field="offset")
    _check_order(onset, apex, offset, where)
    yield _CodedRow(i + 1, get, where, f"{subject_prefix}{number:0{subject_width}d}", clip,
                    onset, apex, offset)


def read_casme2(path: str | os.PathLike, *, frames_root: str | os.PathLike | None = None,
                dataset: str = "casme2") -> list[MerClip]:
  """Reads a CASME II coding file (``CASME2-coding-20140508.xlsx``, or a CSV with its header).

  Args:
    path: the coding file.
    frames_root: ``CASME2_RAW_selected`` (or ``Cropped``); when given every clip's folder
      ``sub01/EP02_01f`` must exist (the error names it).
    dataset: the records' dataset name (the synthetic generator writes this format too).
  """
  path = pathlib.Path(path)
  if path.suffix.lower() == ".csv":
    header_row, data = ss.load_csv(path)
    rows, sheet = [tuple(header_row)] + list(data), None
    header, cols = find_columns(rows, CASME2_COLUMNS, _REQUIRED, file=path, sheet=None)
  else:
    sheet, header, cols, rows = _workbook_rows(path, CASME2_COLUMNS, _REQUIRED)
  clips = []
  for r in _coded_rows(path, sheet, header, cols, rows, subject_prefix="sub", subject_width=2):
    clips.append(MerClip(
        dataset=dataset, subject=r.subject, clip=r.clip, onset=r.onset, apex=r.apex,
        offset=r.offset, aus=ss.text(r.get("aus")),
        emotion=_emotion(r.get("emotion"), dataset, r.where, "emotion"),
        frames=_frames_folder(frames_root, r.subject, r.clip, r.where),
        source=SourceRef(str(path), sheet, r.row)))
  return _finish(clips, path)


# ----------------------------------------------------------------------------------------------
# SAMM

SAMM_COLUMNS = {
    "subject": ("Subject",), "filename": ("Filename", "File name"),
    "onset": ("Onset Frame", "Onset"), "apex": ("Apex Frame", "Apex"),
    "offset": ("Offset Frame", "Offset"), "aus": ("Action Units", "AUs"),
    "emotion": ("Estimated Emotion", "Emotion"),
    "objective_class": ("Objective Classes", "Objective Class"),
    "inducement_code": ("Inducement Code",), "type": ("Type",), "notes": ("Notes",),
}


def read_samm(path: str | os.PathLike, *,
              frames_root: str | os.PathLike | None = None) -> list[MerClip]:
  """Reads ``SAMM_Micro_FACS_Codes_v2.xlsx`` (preamble rows, then the header).

  Args:
    path: the FACS coding file.
    frames_root: the folder holding ``006/006_1_2/``; when given every clip's folder must
      exist (the error names it).
  """
  path = pathlib.Path(path)
  sheet, header, cols, rows = _workbook_rows(path, SAMM_COLUMNS, _REQUIRED)
  clips = []
  for r in _coded_rows(path, sheet, header, cols, rows, subject_prefix="", subject_width=3,
                       apex_missing_ints=(-1,)):
    extra = tuple((f, ss.text(r.get(f))) for f in ("objective_class", "inducement_code",
                                                   "type", "notes") if f in cols)
    clips.append(MerClip(
        dataset="samm", subject=r.subject, clip=r.clip, onset=r.onset, apex=r.apex,
        offset=r.offset, aus=ss.text(r.get("aus")),
        emotion=_emotion(r.get("emotion"), "samm", r.where, "emotion"),
        frames=_frames_folder(frames_root, r.subject, r.clip, r.where),
        source=SourceRef(str(path), sheet, r.row), extra=extra))
  return _finish(clips, path)


# ----------------------------------------------------------------------------------------------
# SMIC

_SMIC_CLIP = re.compile(r"^(s\d+)_([a-z]+)_(\d+)$", re.IGNORECASE)


def _natural(name: str) -> tuple:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def read_smic(root: str | os.PathLike) -> list[MerClip]:
  """Reads SMIC's folder structure ``<root>/<subject>/micro/<class>/<clip>/<frames>``.

  Args:
    root: the folder holding the subject folders (e.g. ``SMIC_all_raw/HS``).
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FrameSourceError("SMIC root folder does not exist", file=root)
  clips = []
  for subject_dir in sorted((p for p in root.iterdir() if p.is_dir()),
                            key=lambda p: _natural(p.name)):
    micro = subject_dir / "micro"
    if not micro.is_dir():
      continue
    for class_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
      emotion = class_dir.name.lower()
      if emotion not in EMOTIONS["smic"]:
        raise AnnotationError(f"class folder must be one of {list(EMOTIONS['smic'])}",
                              file=class_dir, value=class_dir.name)
      for clip_dir in sorted((p for p in class_dir.iterdir() if p.is_dir()),
                             key=lambda p: _natural(p.name)):
        match = _SMIC_CLIP.match(clip_dir.name)
        if match:
          code = match.group(2).lower()
          if SMIC_CLASS_CODES.get(code) != emotion:
            raise AnnotationError(f"clip code {code!r} disagrees with its class folder "
                                  f"{class_dir.name!r}", file=clip_dir, field="clip",
                                  value=clip_dir.name)
          if match.group(1).lower() != subject_dir.name.lower():
            raise AnnotationError(f"clip name says subject {match.group(1)!r}, its folder "
                                  f"{subject_dir.name!r}", file=clip_dir, field="clip",
                                  value=clip_dir.name)
        frames = ImageFolder(clip_dir)
        clips.append(MerClip(
            dataset="smic", subject=subject_dir.name, clip=clip_dir.name, onset=frames.first,
            apex=None, offset=frames.last, aus="", emotion=emotion, frames=str(clip_dir),
            source=SourceRef(str(clip_dir)),
            extra=(("missing_frames", len(frames.missing)),)))
  if not clips:
    raise AnnotationError("no clips found under <subject>/micro/<class>/<clip>/", file=root)
  return _finish(clips, root)


READERS = {"casme2": read_casme2, "samm": read_samm, "smic": read_smic}


def read_mer(fmt: str, path: str | os.PathLike, **options: Any) -> list[MerClip]:
  """``read_casme2`` / ``read_samm`` / ``read_smic`` by name."""
  if fmt not in READERS:
    raise ValueError(f"unknown MER format {fmt!r}; known: {sorted(READERS)}")
  return READERS[fmt](path, **options)


def attach_frames(clips: Iterable[MerClip], frames_root: str | os.PathLike) -> list[MerClip]:
  """The clips with ``frames`` set to ``<frames_root>/<subject>/<clip>`` (checked)."""
  out = []
  for c in clips:
    folder = pathlib.Path(frames_root) / c.subject / c.clip
    if not folder.is_dir():
      raise FrameSourceError(f"frame folder of clip {c.key} does not exist", file=folder)
    out.append(dataclasses.replace(c, frames=str(folder)))
  return out
