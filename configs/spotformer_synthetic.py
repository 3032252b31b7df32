"""SpotFormer, LOSO over the embedded synthetic dataset (the main command's default).

Run:
  python -m fes_jax.main --config=configs/spotformer_synthetic.py --workdir=workdir/full
  python -m fes_jax.main --config=configs/spotformer_synthetic.py:preset=tiny,epochs=2 \
      --workdir=/tmp/t

Config args (after ':'): preset=tiny|default|full (synthetic size), seed=N, epochs=N, and
size overrides subjects=N, videos=N (per subject), frames=N (per video).

`make demo` runs this config reduced to fit about 20 minutes on a 2-core CPU:
  :preset=default,subjects=4,videos=1,frames=600,epochs=5
(4 LOSO folds, 2,400 frames, 5 epochs instead of 100). Its wall time and F1 have not been
measured yet; the full default (8 subjects x 2 videos x 1200 frames, 100 epochs) costs about
30 min of preprocessing at the measured 10.9 frames/s plus hours of CPU training.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, preset="default", seed=0, epochs=100, subjects=0, videos=0,
                              frames=0, selection="last_epoch")
  return config_lib.spotting_config("synthetic", config_lib.spotformer_model_config(), args)
