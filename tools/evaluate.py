"""Scores a MEGC submission CSV against an annotation file; prints one JSON object.

  python tools/evaluate.py --pred=PRED.csv --gt='CAS(ME)^2code_final.xlsx' --format=casme2
  python tools/evaluate.py --pred=PRED.csv --gt=SAMM_LongVideos_Release.xlsx --format=samm_lv \
      --length=inclusive --matching=optimal

PRED.csv: ``vid,onset,offset,type`` (type mae / me), frames 1-based in the original video
numbering, video names as fes_jax names them (``s15_0401``, ``006_1``, ``spNO.1/a``). The
ground truth is read at the original frame rate with the quirk policies of
fes_jax/data/policies.py (``--policy missing_offset=unmatchable`` etc.). Every MEGC convention
is a flag; defaults follow SpotFormer's code (fes_jax/eval/megc.py). The output has TP, FP, FN,
precision, recall and F1 for MaE, ME and overall, and the conventions used.

``--compare=B.csv`` also scores a second submission on the same ground truth and pairs the
two per ground-truth interval (fes_jax/eval/paired.py): intervals found by both, by PRED
only, by B only, by neither, and the exact McNemar p-value, per type. E.g. the README's
SW-MRO vs adjacent-flow ablation:

  python tools/evaluate.py --pred=workdir/abl_sw_mro/results/submission.csv \
      --compare=workdir/abl_adjacent/results/submission.csv \
      --gt='workdir/abl_sw_mro/data/CAS(ME)^2code_final.xlsx' --format=casme2
"""

import dataclasses
import json
import sys

from absl import app
from absl import flags

from fes_jax.data import readers
from fes_jax.data.errors import DataError
from fes_jax.data.policies import Policies
from fes_jax.eval import megc, paired, submission

_PRED = flags.DEFINE_string("pred", None, "Submission CSV (vid,onset,offset,type).")
_COMPARE = flags.DEFINE_string("compare", None, "Second submission CSV to pair with --pred.")
_GT = flags.DEFINE_string("gt", None, "Annotation file.")
_FORMAT = flags.DEFINE_enum("format", None, readers.FORMATS, "Annotation file format.")
_FRAME_COUNTS = flags.DEFINE_string("frame_counts", None, "Frame-count file, optional.")
_POLICY = flags.DEFINE_multi_string("policy", [], "Quirk policy override NAME=VALUE.")
_IOU = flags.DEFINE_float("iou", 0.5, "IoU threshold.")
_LENGTH = flags.DEFINE_enum("length", "exclusive", ["exclusive", "inclusive"],
                            "Interval length in the IoU: end-start or end-start+1.")
_OP = flags.DEFINE_enum("threshold_op", ">=", [">=", ">"], "IoU comparison.")
_MATCHING = flags.DEFINE_enum("matching", "greedy", ["greedy", "optimal"], "Matching.")
_TYPE_FROM = flags.DEFINE_enum("type_from", "classifier", ["classifier", "length"],
                               "Proposal type: as given, or from its length (MEGC2020).")
_ME_RANGE = flags.DEFINE_list("me_range", ["7", "16"], "type_from=length: ME length range.")
_MAE_MIN = flags.DEFINE_integer("mae_min", 17, "type_from=length: shortest MaE.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    overrides = dict(item.partition("=")[::2] for item in _POLICY.value)
    gt = readers.read_annotations(_FORMAT.value, _GT.value,
                                  policies=Policies.from_config(overrides),
                                  frame_counts=_FRAME_COUNTS.value)
    conv = megc.MegcConventions(iou_threshold=_IOU.value, length=_LENGTH.value,
                                threshold_op=_OP.value, matching=_MATCHING.value,
                                type_from=_TYPE_FROM.value,
                                me_range=tuple(int(x) for x in _ME_RANGE.value),
                                mae_min=_MAE_MIN.value)
    preds = submission.read_csv(_PRED.value)
    other = submission.read_csv(_COMPARE.value) if _COMPARE.value else None
  except (DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  spans = submission.ground_truth(gt)
  known = {s.video for s in spans} | {v.name for v in gt.videos()}
  unknown = sorted({p.video for p in preds + (other or [])} - known)
  out = {"scores": megc.scores(megc.counts(spans, preds, conv)),
         "conventions": dataclasses.asdict(conv), "predictions": len(preds),
         "ground_truth": len(spans), "unknown_videos": unknown}
  if other is not None:
    out["compare"] = {"pred": _PRED.value, "other": _COMPARE.value,
                      "other_scores": megc.scores(megc.counts(spans, other, conv)),
                      "other_predictions": len(other),
                      "paired": paired.compare(spans, preds, other, conv)}
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["pred", "gt", "format"])
  app.run(main)
