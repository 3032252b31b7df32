"""SpotFormer, LOSO over the embedded synthetic dataset (the main command's default).

Run:
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:demo --workdir=workdir/demo
  python -m fes_jax.main --config=configs/spotformer_synthetic.py --workdir=workdir/full
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:preset=tiny,epochs=2 \
      --workdir=/tmp/t

Config args (after ':'): preset=tiny|default|full (synthetic size), seed=N, epochs=N,
selection=last_epoch|validation|oracle, size overrides subjects=N, videos=N (per subject),
frames=N (per video), me_per_minute=X (ME rate; 0: the preset's 4), temporal=sw_mro|adjacent
(the features: SW-MRO, or the Table III adjacent-frame-flow baseline), folds=s15+s16 (run only
the folds holding out these subjects; every other subject still trains), and `demo`.

The SW-MRO vs adjacent-flow ablation (README, "Ablation"):
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:demo,subjects=5,me_per_minute=12,folds=s15+s16 \
      --workdir=workdir/ablation_sw_mro
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:demo,subjects=5,me_per_minute=12,folds=s15+s16,temporal=adjacent \
      --workdir=workdir/ablation_adjacent

`demo` (what `make demo` runs) reduces the run to fit about 20 minutes on a 2-core CPU:
4 subjects x 1 video x 600 frames (4 LOSO folds, 2,400 frames, 8 MaE and 6 ME), and a
shorter training: 20 epochs of 4 steps of 8 segments (128 windows) at learning rate 1e-3,
instead of the reference's 100 epochs of 32-segment batches at 2e-4 (on this little data
the reference recipe makes 1 step per epoch and learns nothing in a demo's time).
Expected result of `make demo` (measured 2026-11-24 in a fresh clone on the otherwise idle
2-core CPU, README "What the demo gives"): 13 min 3 s including creating `.venv` (data 8 s,
preprocessing 170 s, folds 125-154 s); MaE 2 TP / 8 FP / 6 FN (F1 0.2222), ME 0 / 0 / 6
(F1 0), overall F1 0.1667, last-epoch selection. Earlier versions gave overall F1 0.0870
(before the flattened matmuls of fes_jax/models/layers.py), 0.1818 (before the BatchNorm
backward of fes_jax/models/batch_norm.py) and 0.1000 (threefry dropout masks): each changed
gradients at round-off level or the masks, so training took another path; one seed and 8 MaE,
so these differences are noise-sized. The full default (8 subjects x 2 videos x 1200 frames, 100 epochs, the
reference recipe) costs about 30 min of preprocessing at the measured 10.9 frames/s plus
hours of CPU training (WORKSPACE.md).
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_spotting_arg(arg, epochs=100)
  return config_lib.spotting_config("synthetic", config_lib.spotformer_model_config(), args)
