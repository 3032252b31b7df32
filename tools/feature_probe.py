"""Feature-level probe of one or more runs: LOSO linear AUC of ME / MaE apex windows.

  python tools/feature_probe.py --workdir=workdir/ablation_sw_mro,workdir/ablation_adjacent

Each workdir must have run its preprocess stage (``--stop_after=preprocess`` is enough); the
runs should share their dataset (the workdir's own config is read). Prints JSON
``{workdir: {"features": <preprocess.temporal>, "me": {"auc", ...}, "mae": {...}}}``. No
network is trained: see fes_jax/eval/feature_probe.py.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags
import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_WORKDIRS = flags.DEFINE_list("workdir", None, "Workdirs with preprocessed features.")
_RADIUS = flags.DEFINE_integer("apex_radius", 2, "Positives: windows this close to an apex.")
_MARGIN = flags.DEFINE_integer("margin", 10, "Negatives: this far from every interval.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from fes_jax import stages  # pylint: disable=import-outside-toplevel
  from fes_jax.context import Context  # pylint: disable=import-outside-toplevel
  from fes_jax.eval import feature_probe  # pylint: disable=import-outside-toplevel
  from fes_jax.preprocess.extract import video_key  # pylint: disable=import-outside-toplevel

  out = {}
  for workdir in _WORKDIRS.value:
    w = pathlib.Path(workdir)
    config_path = w / "config.json"
    if not config_path.exists():
      raise app.UsageError(f"{config_path} not found: not a fes_jax workdir")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    dataset = stages.load_dataset(Context(config, w))
    labels = feature_probe.window_labels(dataset, apex_radius=_RADIUS.value,
                                         margin=_MARGIN.value)
    features = {}
    for video in labels:
      path = w / "features" / "videos" / f"{video_key(video)}.npz"
      if not path.exists():
        raise app.UsageError(f"{path} not found: run the preprocess stage first")
      with np.load(path) as f:
        features[video] = f["features"]
    out[workdir] = {"features": config.preprocess.temporal,
                    **feature_probe.probe(features, labels)}
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  app.run(main)
