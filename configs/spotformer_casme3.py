"""SpotFormer, LOSO on CAS(ME)^3 part A.

The dataset is licensed and not shipped; point the config at your copy (layout in
WORKSPACE.md):
  python -m fes_jax.main --config=configs/spotformer_casme3.py --workdir=workdir/spotformer_casme3 \
      --config.dataset.annotations='/data/casme3/cas_me_3_part_A_label.xlsx' \
      --config.dataset.frames_root=/data/casme3/part_A
One fold only (cluster job arrays): add --fold=K.

Expected result today: prepare_data reads and validates the annotations and frames and writes
<workdir>/data_summary.json; the run then stops at 'preprocess' (exit status 3, not
implemented yet). No F1 is claimed until training and evaluation exist.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, epochs=90)
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config("casme3")
  cfg.preprocess = config_lib.preprocess_config()
  cfg.model = config_lib.spotformer_model_config()
  cfg.train = config_lib.train_config(epochs=args.epochs, mae_weight=0.5)
  cfg.eval = config_lib.eval_config()
  cfg.loso = config_lib.loso_config()
  return cfg
