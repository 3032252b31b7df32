"""SpoT-GCN (SpotFormer's predecessor, 71,474 parameters), LOSO on any supported dataset.

Run (synthetic, the demo's size):
  python -m fes_jax.main --config=configs/spot_gcn.py:demo \
      --workdir=workdir/spot_gcn
On a real dataset (paths as in configs/spotformer_casme2.py):
  python -m fes_jax.main --config=configs/spot_gcn.py:dataset=samm_lv --workdir=workdir/gcn_samm \
      --config.dataset.annotations=... --config.dataset.frames_root=... \
      --config.dataset.frame_counts=...

Config args (after ':'): dataset = synthetic | casme2 | samm_lv | casme3; epochs (0: the
dataset's default, 100 for synthetic); selection; for synthetic also preset, seed, subjects,
videos, frames, me_per_minute, temporal, folds and `demo` (as
configs/spotformer_synthetic.py). Same SW-MRO features, losses, training
recipe and post-processing as SpotFormer (the reference shares them).

Expected result: every stage runs and writes <workdir>/results/report.md. Measured on the
synthetic data here: see README ("Variants").
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_spotting_arg(arg, dataset="synthetic", epochs=0)
  return config_lib.spotting_config(args.dataset, config_lib.spot_gcn_model_config(), args)
