"""SpotFormer, LOSO on SAMM Long Videos (resampled /7 to ~28.6 fps, as SpotFormer).

The dataset is licensed and not shipped; point the config at your copy (layout in
WORKSPACE.md):
  python -m fes_jax.main --config=configs/spotformer_samm_lv.py --workdir=workdir/spotformer_samm_lv \
      --config.dataset.annotations='/data/samm_lv/SAMM_LongVideos_Release.xlsx' \
      --config.dataset.frames_root=/data/samm_lv/SAMM_longvideos \
      --config.dataset.frame_counts=/data/samm_lv/video_frame_counts.txt
One fold only (cluster job arrays): add --fold=K.

Expected result: every stage runs (preprocess, 30 LOSO folds, evaluate, aggregate, report in
<workdir>/results/). Not measured here: the dataset is licensed and absent from this machine.
The paper reports overall F1 0.4401 (MaE 0.4447, ME 0.4281; Table VII) under the authors'
oracle protocol (best epoch per held-out subject on its own F1): `:selection=oracle` runs
that protocol, and every output it makes says "oracle". The default selection (last epoch)
never looks at the held-out subject and is expected to score lower. Cost at the rates
measured on the 2-core CPU: see WORKSPACE.md.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, selection="last_epoch", epochs=100)
  return config_lib.spotting_config("samm_lv", config_lib.spotformer_model_config(), args)
