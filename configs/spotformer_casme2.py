"""SpotFormer, LOSO on CAS(ME)^2.

The dataset is licensed and not shipped; point the config at your copy (layout in
WORKSPACE.md):
  python -m fes_jax.main --config=configs/spotformer_casme2.py --workdir=workdir/spotformer_casme2 \
      --config.dataset.annotations='/data/casme2/CAS(ME)^2code_final.xlsx' \
      --config.dataset.frames_root=/data/casme2/rawpic \
      --config.dataset.frame_counts=/data/casme2/video_frame_counts.txt
One fold only (cluster job arrays): add --fold=K.

Expected result today: prepare_data reads and validates the annotations and frames and writes
<workdir>/data_summary.json; the run then stops at 'preprocess' (exit status 3, not
implemented yet). No F1 is claimed until training and evaluation exist.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, epochs=100)
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config("casme2")
  cfg.preprocess = config_lib.preprocess_config()
  cfg.model = config_lib.spotformer_model_config()
  cfg.train = config_lib.train_config(epochs=args.epochs, mae_weight=0.5)
  cfg.eval = config_lib.eval_config()
  cfg.loso = config_lib.loso_config()
  return cfg
