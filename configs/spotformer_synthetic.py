"""SpotFormer, LOSO over the embedded synthetic dataset (the main command's default).

Run:
  python -m fes_jax.main --config=configs/spotformer_synthetic.py --workdir=workdir/demo
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:preset=tiny --workdir=/tmp/t

Config args (after ':'): preset=tiny|default|full (synthetic size), seed=N, epochs=N.

Expected result today: the prepare_data stage generates the synthetic dataset into
<workdir>/data (preset 'default': 8 subjects x 2 videos x 1200 frames) and writes
<workdir>/data_summary.json; the run then stops at the 'preprocess' stage with exit status 3,
saying it is not implemented yet (it arrives with the SW-MRO preprocessing issue). No F1 is
claimed until training and evaluation exist.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, preset="default", seed=0, epochs=100)
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config(
      "synthetic", synthetic={"preset": args.preset, "seed": args.seed, "workers": 2})
  cfg.preprocess = config_lib.preprocess_config()
  cfg.model = config_lib.spotformer_model_config()
  cfg.train = config_lib.train_config(epochs=args.epochs)
  cfg.eval = config_lib.eval_config()
  cfg.loso = config_lib.loso_config()
  return cfg
