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
the folds holding out these subjects; every other subject still trains),
recipe=fixed_steps|reference (the training recipe: fes_jax/config_lib.py RECIPES; the
default here is fixed_steps, 100 epochs of 20 steps of 8 segments at lr 1e-3, since the
reference's one pass over the expression segments per epoch is only 2-5 steps on synthetic
folds and leaves the models underfitted: README, "Ablation"), `demo` and `ablation` (the
ablation's data: 8 subjects x 1 video x 600 frames at 24 ME per minute).

The SW-MRO vs adjacent-flow ablation (README, "Ablation") was measured with SpoT-GCN
(configs/spot_gcn.py:ablation, 12 min of training per feature). With SpotFormer:
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:ablation --workdir=workdir/abl_sf
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:ablation,temporal=adjacent \
      --workdir=workdir/abl_sf_adjacent
costs about 5 h of training per feature on the 2-core CPU (8 folds of 2,000 steps of 128
windows at the ~110 windows/s measured at that batch); not run here.

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
so these differences are noise-sized. The full default (8 subjects x 2 videos x 1200 frames, 8 folds of 100
epochs with the fixed-steps recipe) costs about 30 min of preprocessing at the measured 11.1
frames/s plus about 5 h of CPU training (WORKSPACE.md).
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_spotting_arg(arg, epochs=100)
  return config_lib.spotting_config("synthetic", config_lib.spotformer_model_config(), args)
