"""SpotFormer, LOSO on SAMM Long Videos (resampled /7 to ~28.6 fps, as SpotFormer).

The dataset is licensed and not shipped; point the config at your copy (layout in
WORKSPACE.md):
  python -m fes_jax.main --config=configs/spotformer_samm_lv.py --workdir=workdir/spotformer_samm_lv \
      --config.dataset.annotations='/data/samm_lv/SAMM_LongVideos_Release.xlsx' \
      --config.dataset.frames_root=/data/samm_lv/SAMM_longvideos \
      --config.dataset.frame_counts=/data/samm_lv/video_frame_counts.txt
One fold only (cluster job arrays): add --fold=K.

Expected result today: prepare_data reads and validates the annotations and frames and writes
<workdir>/data_summary.json; the run then stops at 'preprocess' (exit status 3, not
implemented yet). No F1 is claimed until training and evaluation exist.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, epochs=100)
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.dataset = config_lib.dataset_config("samm_lv")
  cfg.preprocess = config_lib.preprocess_config()
  cfg.model = config_lib.spotformer_model_config()
  cfg.train = config_lib.train_config(epochs=args.epochs, mae_weight=0.55)
  cfg.eval = config_lib.eval_config()
  cfg.loso = config_lib.loso_config()
  return cfg
