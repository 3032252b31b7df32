"""SpotFormer, LOSO on CAS(ME)^2.

The dataset is licensed and not shipped; point the config at your copy (layout in
WORKSPACE.md):
  python -m fes_jax.main --config=configs/spotformer_casme2.py --workdir=workdir/spotformer_casme2 \
      --config.dataset.annotations='/data/casme2/CAS(ME)^2code_final.xlsx' \
      --config.dataset.frames_root=/data/casme2/rawpic \
      --config.dataset.frame_counts=/data/casme2/video_frame_counts.txt
One fold only (cluster job arrays): add --fold=K.

Expected result: every stage runs (preprocess, 22 LOSO folds, evaluate, aggregate, report in
<workdir>/results/). Not measured here: the dataset is licensed and absent from this machine.
The paper reports overall F1 0.4841 (MaE 0.5061, ME 0.2817; Table VII) under the authors'
oracle protocol (best epoch per held-out subject on its own F1): `:selection=oracle` runs
that protocol, and every output it makes says "oracle". The default selection (last epoch)
never looks at the held-out subject and is expected to score lower. Cost at the rates
measured on the 2-core CPU: see WORKSPACE.md.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, selection="last_epoch", epochs=100)
  return config_lib.spotting_config("casme2", config_lib.spotformer_model_config(), args)
