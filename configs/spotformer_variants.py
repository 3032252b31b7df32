"""SpotFormer's architecture variants (paper Table IV), LOSO on any supported dataset.

Run (synthetic, the demo's size):
  python -m fes_jax.main --config=configs/spotformer_variants.py:variant=seq_st,demo \
      --workdir=workdir/seq_st
On a real dataset (paths as in configs/spotformer_casme2.py):
  python -m fes_jax.main --config=configs/spotformer_variants.py:variant=paral_st,dataset=casme2 \
      --workdir=workdir/paral_st_casme2 --config.dataset.annotations=... --config.dataset.frames_root=...

Config args (after ':'): variant = simul_st (SpotFormer itself) | seq_st | simul_ts |
paral_st | paral_st_shared (the paper's "Paral-ST (no addi. para.)"); dataset = synthetic |
casme2 | samm_lv | casme3; epochs (0: the dataset's default, 100 for synthetic); selection;
recipe (fixed_steps for synthetic, reference for the real datasets: fes_jax/config_lib.py
RECIPES); for synthetic also preset, seed, subjects, videos, frames, me_per_minute, temporal,
folds, `demo` and `ablation` (as configs/spotformer_synthetic.py).
Parameters: 3,168,778 for every variant but paral_st (9,088,522; own design: the paper
publishes no code for it).

Expected result: every stage runs and writes <workdir>/results/report.md. The paper's
overall F1 (oracle protocol) on SAMM-LV / CAS(ME)^2: Simul-ST 0.4401 / 0.4841, Seq-ST
0.4367 / 0.4630, Paral-ST 0.4139 / 0.5054, Paral-ST (no addi. para.) 0.3964 / 0.4794,
Simul-TS 0.4321 / 0.4733. Measured here with `:variant=seq_st,demo` (the `make demo` data
and recipe, 4 folds, its preprocessed features reused; 9 min 53 s of training on the 2-core
CPU), last-epoch selection: MaE 3 TP / 6 FP / 5 FN (F1 0.3529), ME 0 / 0 / 6 (F1 0), overall
F1 0.2609 (Simul-ST, the demo: 0.1000). The other variants are not measured here yet.
"""

from fes_jax import config_lib

VARIANTS = ("simul_st", "seq_st", "simul_ts", "paral_st", "paral_st_shared")


def get_config(arg=None):
  args = config_lib.parse_spotting_arg(arg, variant="seq_st", dataset="synthetic", epochs=0)
  if args.variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {args.variant!r}")
  model = config_lib.spotformer_model_config()
  model.variant = "paral_st" if args.variant == "paral_st_shared" else args.variant
  model.paral_shared = args.variant == "paral_st_shared"
  return config_lib.spotting_config(args.dataset, model, args)
