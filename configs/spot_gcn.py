"""SpoT-GCN (SpotFormer's predecessor, 71,474 parameters), LOSO on any supported dataset.

Run (synthetic, the demo's size):
  python -m fes_jax.main --config=configs/spot_gcn.py:demo \
      --workdir=workdir/spot_gcn
On a real dataset (paths as in configs/spotformer_casme2.py):
  python -m fes_jax.main --config=configs/spot_gcn.py:dataset=samm_lv --workdir=workdir/gcn_samm \
      --config.dataset.annotations=... --config.dataset.frames_root=... \
      --config.dataset.frame_counts=...

The SW-MRO vs adjacent-flow ablation (README, "Ablation"; the paper's Table III):
  python -m fes_jax.main --config=configs/spot_gcn.py:ablation --workdir=workdir/abl_sw_mro
  python -m fes_jax.main --config=configs/spot_gcn.py:ablation,temporal=adjacent \
      --workdir=workdir/abl_adjacent

Config args (after ':'): dataset = synthetic | casme2 | samm_lv | casme3; epochs (0: the
dataset's default, 100 for synthetic); selection; recipe = fixed_steps (default for synthetic:
20 steps of 8 segments per epoch at lr 1e-3) | reference (default for the real datasets: one
pass over the expression segments per epoch, 32 segments per step, lr 2e-4; see
fes_jax/config_lib.py RECIPES); for synthetic also preset, seed, subjects, videos, frames,
me_per_minute, temporal, folds, `demo` (as configs/spotformer_synthetic.py) and `ablation`
(8 subjects x 1 video x 600 frames at 24 ME per minute, every fold; explicit args win). Same
SW-MRO features, losses and post-processing as SpotFormer (the reference shares them).

Expected result: every stage runs and writes <workdir>/results/report.md. Measured with
`:demo` (the `make demo` data and recipe, 4 folds; its preprocessed features reused), last-epoch
selection: MaE 5 TP / 9 FP / 3 FN (F1 0.4545), ME 0 TP / 13 FP / 6 FN (F1 0), overall F1
0.2439; training 61 s for all four folds (about 1,600 windows/s on the 2-core CPU).
Measured with `:ablation` (8 folds, 2026-11-24), held-out ME TP / FP / FN: SW-MRO 19 / 21 / 44
(F1 0.369), adjacent flow 12 / 28 / 51 (F1 0.233); with `:ablation,seed=1` 16 / 24 / 45
(0.317) vs 13 / 27 / 48 (0.257); `seed=2` 9 / 31 / 43 (0.196) vs 4 / 36 / 48 (0.087); about
18 min per feature from nothing on the 2-core CPU
(preprocessing 5-6 min, folds ~85 s each).
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_spotting_arg(arg, dataset="synthetic", epochs=0)
  return config_lib.spotting_config(args.dataset, config_lib.spot_gcn_model_config(), args)
