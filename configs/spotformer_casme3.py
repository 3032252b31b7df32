"""SpotFormer, LOSO on CAS(ME)^3 part A.

The dataset is licensed and not shipped; point the config at your copy (layout in
WORKSPACE.md):
  python -m fes_jax.main --config=configs/spotformer_casme3.py --workdir=workdir/spotformer_casme3 \
      --config.dataset.annotations='/data/casme3/cas_me_3_part_A_label.xlsx' \
      --config.dataset.frames_root=/data/casme3/part_A
One fold only (cluster job arrays): add --fold=K.

Expected result: every stage runs (preprocess, one LOSO fold per subject, evaluate, aggregate,
report in <workdir>/results/). Not measured here: the dataset is licensed and absent from
this machine, and SpotFormer's paper reports no CAS(ME)^3 number to compare with.
`:selection=oracle` runs the authors' oracle protocol (outputs labelled "oracle"); the
default (last epoch) never looks at the held-out subject.
"""

from fes_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, selection="last_epoch", epochs=90)
  return config_lib.spotting_config("casme3", config_lib.spotformer_model_config(), args)
