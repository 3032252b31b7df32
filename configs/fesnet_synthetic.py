"""FESNet on the embedded synthetic dataset (generated into <workdir>/data).

Run:
  python -m fes_jax.main --config=configs/fesnet_synthetic.py:demo --workdir=workdir/fesnet_demo
  python -m fes_jax.main --config=configs/fesnet_synthetic.py:tiny --workdir=/tmp/fesnet_tiny
  python -m fes_jax.main --config=configs/fesnet_synthetic.py --workdir=workdir/fesnet_full

Config args (after ':'): `tiny` (the tests' size), `demo` (a CPU run, below), preset=tiny|
default|full and data_seed=N (the synthetic data), subjects=N, videos=N (per subject),
frames=N (per video), me_per_minute=X; protocol=kfold5|loso, selection=last_epoch|oracle,
epochs=N, batch=N (clips), lr=X, size=N (crop side = model.image_size), model=paper|small|tiny,
clips=all|expression, seed=N (training seed), folds=s15+s16 (loso: hold out only these).
Every other choice is a config field (fes_jax/fesnet/config.py): train.gamma, train.lsdm_form,
train.ce_on, preprocess.target_fps (0: the videos' 30 fps), preprocess.clip_length, ...

Default (no args): the synthetic default preset (8 subjects x 2 videos x 1200 frames), the
paper's model at 112 x 112, five folds by video, Adam lr 5e-4, 50 epochs of 8-clip batches:
hours on a CPU, meant for an accelerator.

`tiny`: 3 subjects x 1 video x 160 frames (tiny preset), 32 x 32 crops, clips every 20
frames (overlapping: 8 per video), FesnetConfig.tiny with BatchNorm momentum 0.5, LOSO (3
folds), 2 epochs of 2 steps of 8 clips at lr 1e-2: a smoke test of every stage.
`demo`: 5 subjects x 1 video x 480 frames (default preset), 48 x 48 crops, the 'small' model
(half the paper's widths, 2 attention blocks), five folds by video (one video each), 12 epochs
of 8 clips (every training clip once per epoch) at lr 1e-3.
Measured (2026-11-23, this project's 2-core CPU, no GPU): `demo` took 10 min 02 s with other
jobs running (data 23 s, crops 11 s, 5 folds of 94-136 s at 7.6-9.7 clips/s, 842,660
parameters) and 9 min 01 s in a fresh clone on an idle machine (folds 93-113 s), with the
same results both times: MaE 0 TP / 113 FP / 9 FN, ME 0 / 112 / 5, overall F1 0.0000, frame
accuracy 41.00 %, edit 11.39 per video / 24.91 per clip, last-epoch selection, five folds by
video.
The demo does not learn the synthetic expressions: its predictions are fragments of MaE / ME
runs all over the videos (the inverse class weights make ME frames weigh ~40x neutral ones),
and fold 0's model scores only 43.8 % frame accuracy (F1 0.119) on its own four training
videos, so 12 epochs of 8 steps under-fit at 48 x 48 (a run at lr 3e-3 for 20 epochs was no
better on fold 0: 19.8 %; the 'tiny' model at 32 x 32 for 40 epochs at lr 3e-3 reached
21.8 % on its training videos and 10.8 % held out: it predicts nearly every MaE and ME
training frame right but most neutral frames as expressions). It checks the pipeline, not
FESNet's accuracy. `tiny`: 43 s, every
frame predicted ME after its 4 steps (overall F1 0.0000, 0 TP / 3 FP / 8 FN, frame accuracy
8.96 %, edit 18.10 per video); tests/test_fesnet_task.py's overfit test shows the same trainer
recovering every interval of one video it trains on (an overfit check, not generalisation).
"""

from fes_jax.fesnet import config as fesnet_config


def get_config(arg=None):
  return fesnet_config.fesnet_config("synthetic",
                                     fesnet_config.parse_fesnet_arg(arg, synthetic=True))
