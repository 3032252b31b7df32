"""Helpers shared by the config files in ``configs/``.

Config files stay declarative (big_vision style): ``get_config(arg)`` builds one
``ml_collections.ConfigDict`` from these section builders and overrides what the experiment
changes. ``arg`` is the text after ``:`` in ``--config=configs/x.py:preset=tiny,seed=1``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from fes_jax.data.policies import Policies


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``"a=1,b=x,flag"`` into a ConfigDict, typed like ``defaults``.

  A bare word ``flag`` sets a boolean default to True; unknown keys are an error.
  """
  result = ml_collections.ConfigDict(defaults)
  if not arg:
    return result
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      result[key] = True
    elif isinstance(default, bool):
      result[key] = value.lower() in ("1", "true", "yes", "on")
    elif isinstance(default, int):
      result[key] = int(value)
    elif isinstance(default, float):
      result[key] = float(value)
    else:
      result[key] = value
  return result


def policies_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The annotation quirk policies (fes_jax/data/policies.py) with their defaults."""
  values = dataclasses.asdict(Policies(**overrides))
  return ml_collections.ConfigDict(values)


def dataset_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """Where the data is and how its annotations are read.

  ``name`` is ``synthetic`` (generated into ``<workdir>/data`` unless ``root`` is given),
  ``casme2``, ``samm_lv`` or ``casme3``.
  """
  fmt = "casme2" if name == "synthetic" else name
  cfg = ml_collections.ConfigDict({
      "name": name,
      "format": fmt,
      # Paths; empty means "the synthetic data generated in the workdir".
      "annotations": "",
      "frames_root": "",
      "frame_counts": "",
      # Reader options: casme3 type_when_missing; csv fps / index_base.
      "type_when_missing": "duration",
      "policies": policies_config(fps_divisor=7 if name == "samm_lv" else 1),
      # The synthetic generator (tools/make_synthetic.py), used when name == 'synthetic'.
      # Size overrides of the preset (0 keeps the preset's): num_subjects, videos_per_subject,
      # num_frames (frames per video); me_per_minute (ME rate, 0 keeps the preset's 4).
      "synthetic": {"preset": "default", "seed": 0, "workers": 2, "num_subjects": 0,
                    "videos_per_subject": 0, "num_frames": 0, "me_per_minute": 0.0},
  })
  cfg.update(overrides)
  return cfg


def loso_config() -> ml_collections.ConfigDict:
  """Leave-one-subject-out folds: one fold per subject, sorted by subject name."""
  return ml_collections.ConfigDict({
      # -1 runs every fold; k runs only fold k (cluster job arrays). --fold overrides this.
      "fold": -1,
      # Comma-separated subject names to restrict the folds to; empty = every subject.
      "subjects": "",
  })


def preprocess_config(**overrides: Any) -> ml_collections.ConfigDict:
  """SW-MRO features (SpotFormer section 3.1; ../shared/reference/spotformer.md section 1)
  and the segment TFRecords. See fes_jax/preprocess/sw_mro.py for every option."""
  cfg = ml_collections.ConfigDict({
      "window": 17,  # w; the paper's ablation: 9, 11, 15, 17, 19, 21, 25
      "face_size": 320,
      "face_box": "casme2",  # Zhao's 8d box; 'samm' for the 9d box
      "roi_set": "nodes10",  # SpotFormer's 10 graph nodes; 'zhao15' adds nose sides, eyelids
      "reduction": "mdmo",  # paper; 'top_magnitude' (Zhao), 'four_bin' (AUW-GCN)
      "head_motion": "paper",  # nose-box mean shift; 'zhao' (iterative + subtract), 'none'
      "temporal": "sw_mro",  # or 'adjacent': flow between adjacent frames (Table III baseline)
      # Optical flow: 'farneback' (exact mode, as the reference) or 'dis' (fast mode, about
      # 3x faster in tools/benchmark_preprocess.py, different numbers: see README).
      "flow_method": "farneback",
      # 'dlib' (detect, track, re-detect) or 'file': <landmarks_root>/<frame folder>.npy|.csv
      # (the synthetic ground truth, or your own / OpenFace landmarks).
      "landmarks": "dlib",
      "landmarks_root": "",
      "segment_length": 16,  # windows per TFRecord example (the reference's segments)
      "workers": 2,  # processes, one video each (engine 'local')
      # 'local': features in a pool of `workers` processes, then the TFRecords (default).
      # 'beam': the per-video work (landmarks, SW-MRO, segments) as an Apache Beam pipeline
      # inside the tfds build (fes_jax/preprocess/beam.py), with the same files as 'local'.
      "engine": "local",
      # engine 'beam': the runner and its pipeline options, command-line style (WORKSPACE.md,
      # "Beam"). 'FnApiRunner' is Beam's local runner (what 'DirectRunner' falls back to after
      # trying to download the Prism runner from GitHub), e.g. with options
      # '--direct_num_workers=2 --direct_running_mode=multi_processing'; or 'DirectRunner',
      # 'DataflowRunner', 'FlinkRunner', 'SparkRunner', 'PortableRunner'.
      "beam_runner": "FnApiRunner",
      "beam_options": "",
  })
  cfg.update(overrides)
  return cfg


def spotformer_model_config() -> ml_collections.ConfigDict:
  """SpotFormer (MSSTGT) at the paper's configuration: 3,168,778 parameters."""
  return ml_collections.ConfigDict({
      "name": "spotformer",
      "variant": "simul_st",  # 'seq_st', 'paral_st', 'simul_ts' (paper Table IV)
      "seq_len": 17, "num_nodes": 10, "num_classes": 10,
      "dim": 256, "heads": 4, "dim_head": 64, "mlp_dim": 256,
      "dropout": 0.1, "emb_dropout": 0.1,
      # Dropout masks from a keyed counter hash ('hash': ~1.2-1.3x faster CPU training, README
      # "Speed") or jax.random's threefry ('threefry'); the same Bernoulli(0.1) per element.
      "dropout_rng": "hash",
      "norm": "batch",  # 'layer' as an option
      # Paral-ST only: True is the paper's "Paral-ST (no addi. para.)" (shared temporal
      # layers, fusion without CNN: SpotFormer's parameter budget).
      "paral_shared": False,
  })


def spot_gcn_model_config() -> ml_collections.ConfigDict:
  """SpoT-GCN (SpotFormer's predecessor) at the reference configuration: 71,474 parameters."""
  return ml_collections.ConfigDict({
      "name": "spot_gcn",
      "seq_len": 17, "num_nodes": 10, "num_classes": 10,
      "gcn_hidden": 64, "gcn_kernels": (3, 5, 5, 7),
      "gcn_data_bn": False,  # the reference declares its input BatchNorm but never applies it
      "norm": "batch",
  })


# Per real dataset: MaE loss ratio m (reference) and the reference's epochs.
DATASET_DEFAULTS = {"casme2": {"mae_weight": 0.5, "epochs": 100},
                    "samm_lv": {"mae_weight": 0.55, "epochs": 100},
                    "casme3": {"mae_weight": 0.5, "epochs": 90}}


# Training recipes (config arg `recipe`). 'reference': the authors' (train_config: epochs of
# one pass over the training segments that hold an expression, 32 segments per step, lr 2e-4
# decayed 0.96 per epoch); the default for the real datasets. 'fixed_steps': every epoch is
# 20 steps of 8 segments at lr 1e-3 (same decay), 2,000 steps in 100 epochs; the default for
# the synthetic data. Synthetic folds train on 40-150 segments with an expression (CAS(ME)^2:
# ~970), so the reference recipe gives them 2-5 steps per epoch (CAS(ME)^2: ~31), 200-500 in
# all, most at a decayed lr: SpoT-GCN then found 15-32 % of its own training MEs and no
# held-out ME, with either feature (README, "Ablation").
RECIPES = ("reference", "fixed_steps")
FIXED_STEPS_TRAIN = {"batch_segments": 8, "steps_per_epoch": 20, "learning_rate": 1e-3}
# `demo` (configs' bare arg): the run `make demo` does, sized for a 2-core CPU (see
# configs/spotformer_synthetic.py). DEMO_SIZE are arg defaults (explicit args win).
DEMO_SIZE = {"subjects": 4, "videos": 1, "frames": 600, "epochs": 20}
DEMO_TRAIN = {"batch_segments": 8, "steps_per_epoch": 4, "learning_rate": 1e-3}
# `ablation`: the synthetic set of the SW-MRO vs adjacent-flow ablation (README, "Ablation"):
# 8 subjects x 1 video x 600 frames with 24 ME per minute (Poisson, 8 per video on average;
# the preset's rate is 4): 63 MEs with seed 0, so each fold trains on 50-59 MEs. Arg
# defaults, as DEMO_SIZE.
ABLATION_SIZE = {"subjects": 8, "videos": 1, "frames": 600, "me_per_minute": 24.0}
SYNTHETIC_ARGS = dict(preset="default", seed=0, subjects=0, videos=0, frames=0,
                      me_per_minute=0.0, temporal="sw_mro", folds="", recipe="", demo=False,
                      ablation=False)


def parse_spotting_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """``parse_arg`` with the synthetic-data args, ``demo`` and ``ablation`` (whose sizes
  become defaults; explicit args win)."""
  defaults = {**SYNTHETIC_ARGS, "selection": "last_epoch", **defaults}
  words = [a.strip() for a in (arg or "").split(",")]
  if "demo" in words and "ablation" in words:
    raise ValueError("config args `demo` and `ablation` are different runs; give one")
  if "demo" in words:
    defaults.update(DEMO_SIZE)
  if "ablation" in words:
    defaults.update(ABLATION_SIZE)
  return parse_arg(arg, **defaults)


def spotting_config(dataset: str, model: ml_collections.ConfigDict,
                    args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The whole config of a LOSO spotting run (configs/spotformer_*.py, spot_gcn.py, ...).

  ``dataset``: 'synthetic' (generated in the workdir, sized by ``args.preset``,
  ``args.seed``, ``args.subjects``, ``args.videos``, ``args.frames``) or a real dataset name.
  ``args.epochs`` (0: the dataset's default) and ``args.selection`` are read when present.
  """
  epochs = args.get("epochs", 0) or DATASET_DEFAULTS.get(dataset, {"epochs": 100})["epochs"]
  cfg = ml_collections.ConfigDict()
  if dataset == "synthetic":
    cfg.dataset = dataset_config(
        "synthetic", synthetic={"preset": args.preset, "seed": args.seed, "workers": 2,
                                "num_subjects": args.subjects,
                                "videos_per_subject": args.videos, "num_frames": args.frames,
                                "me_per_minute": float(args.get("me_per_minute", 0.0))})
    mae_weight = 0.5
  elif dataset in DATASET_DEFAULTS:
    cfg.dataset = dataset_config(dataset)
    mae_weight = DATASET_DEFAULTS[dataset]["mae_weight"]
  else:
    raise ValueError(f"unknown dataset {dataset!r}; known: synthetic, {sorted(DATASET_DEFAULTS)}")
  cfg.preprocess = preprocess_config()
  cfg.model = model
  cfg.train = train_config(epochs=epochs, mae_weight=mae_weight,
                           selection=args.get("selection", "last_epoch"))
  cfg.eval = eval_config()
  cfg.loso = loso_config()
  if "temporal" in args:
    cfg.preprocess.temporal = args.temporal
  if args.get("folds"):
    cfg.loso.subjects = args.folds.replace("+", ",")
  recipe = args.get("recipe") or ("fixed_steps" if dataset == "synthetic" else "reference")
  if recipe not in RECIPES:
    raise ValueError(f"config arg recipe={recipe!r} is not one of {list(RECIPES)}")
  if recipe == "fixed_steps":
    cfg.train.update(FIXED_STEPS_TRAIN)
  if args.get("demo"):
    if args.get("recipe"):
      raise ValueError("`demo` has its own shorter recipe; drop the recipe arg")
    cfg.train.update(DEMO_TRAIN)
  return cfg


def train_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The reference's training recipe (spotformer.md section 4)."""
  cfg = ml_collections.ConfigDict({
      "epochs": 100,
      "batch_segments": 32,  # 32 segments x 16 windows = 512 windows
      "learning_rate": 2e-4,
      "betas": (0.7, 0.9),
      "weight_decay": 0.1,
      "lr_decay_per_epoch": 0.96,
      "seed": 270,
      "mae_weight": 0.5,  # m: 0.5 CAS(ME)^2 / CAS(ME)^3, 0.55 SAMM-LV
      # Model selection never looks at the held-out subject: 'last_epoch' or 'validation'
      # (a validation subset of the training subjects). 'oracle' is the papers' protocol
      # (the epoch with the best F1 on the held-out subject itself: optimistic, for
      # comparison with published numbers only); its outputs are named *_oracle and say so.
      "selection": "last_epoch",
      # selection='validation': this many training subjects (a seeded choice) are held out
      # of training; the epoch with the lowest loss on their expression segments is kept.
      "validation_subjects": 1,
      # Optimizer details beyond the reference's numbers: PyTorch's AdamW eps. Weight decay
      # applies to Linear / Conv kernels only (fes_jax/train/state.py weight_decay_mask).
      "adam_eps": 1e-8,
      # Steps per epoch; 0 = ceil(training segments with an expression / batch_segments).
      # Each epoch reads a fresh shuffle seeded by (seed, epoch), repeated as needed.
      "steps_per_epoch": 0,
      # Fold-parallel training (fes_jax/train/parallel.py): 0 = one fold at a time; K > 1 =
      # the folds of a run in groups of K, each group one jitted program (per-fold states
      # stacked, the step vmapped over them, batches sharded over the devices); -1 = every
      # fold in one group. A group's checkpoints: <workdir>/folds/group_<first>_<last>/;
      # its folds' outputs are those of sequential folds. Results equal sequential folds
      # only with a fixed steps_per_epoch: in auto mode (0) a group takes the largest of its
      # folds' step counts for every fold. Selection: 'last_epoch' or 'oracle' ('validation'
      # is refused). A single-fold run (--fold=k) trains fold k alone.
      "fold_parallel": 0,
      # Inference batch (segments) for validation and the held-out subject; 0 = batch_segments.
      "eval_batch_segments": 0,
      # Loss hyper-parameters (fes_jax/losses.py LossWeights; m is mae_weight above).
      # Padded windows of a video's last segment weigh 0 in every term.
      "loss": {
          "me_apex": 1.8, "me_onoff": 1.0, "me_expr": 0.1,
          "mae_apex": 1.0, "mae_onoff": 1.0, "mae_expr": 0.1, "supcon": 0.005,
          "apex_alpha": 0.9, "expr_alpha": 0.8, "apex_gamma": 1.0, "expr_gamma": 1.0,
          "label_smoothing": 0.16, "focal_eps": 1e-5,  # the code's log(p + 1e-5)
          "temperature": 0.5, "base_temperature": 0.07,
          "supcon_normalize": False,  # the code; the paper's formula L2-normalises
      },
      # NaN guard: a step with a non-finite loss or gradient is skipped (state kept, counted);
      # this many consecutive skipped steps abort the fold with an error.
      "max_bad_steps": 10,
      # 'float32', or 'bfloat16' (matmuls in bf16, float32 master weights and loss; for
      # GPUs / TPUs: the models take no dtype, so params and inputs are cast in the step).
      "compute_dtype": "float32",
      # Orbax checkpoints in <workdir>/folds/fold_XXX/checkpoints, one per epoch; a rerun
      # resumes from the newest. keep: how many are kept; async: write in the background.
      "checkpoint_keep": 3,
      "checkpoint_async": False,
      # jax.distributed.initialize(): 'auto' (when the environment says multi-process: SLURM,
      # Open MPI, TPU pod, JAX_COORDINATOR_ADDRESS), 'yes' or 'no'.
      "distributed": "auto",
  })
  cfg.update(overrides)
  return cfg


def eval_config() -> ml_collections.ConfigDict:
  """Post-processing (spotformer.md section 5) and MEGC evaluation (evaluation.md).

  Defaults follow SpotFormer's code; fes_jax/eval/postprocess.py and fes_jax/eval/megc.py
  document each option.
  """
  return ml_collections.ConfigDict({
      "apex_threshold": 0.5,
      "me_search": (2, 8),  # onset/offset search, frames from the apex (code; paper: 2..8)
      "mae_search": (8, 29),  # (code; paper: 8..30)
      "require_order": True,  # onset prob > offset prob at the onset, reverse at the offset
      "nms_iou": 0.5,
      "top_k": 5,  # proposals kept per video and type
      "iou_threshold": 0.5,
      "iou_inclusive": False,  # SpotFormer: end - start; MEGC2020 baseline: end - start + 1
      "threshold_op": ">=",  # '>' as AUW-GCN
      "matching": "greedy",  # SpotFormer; 'optimal' one-to-one matching
      "type_from": "classifier",  # or 'length' (MEGC2020 baseline)
      "plots": 8,  # videos plotted in the report (0: none, -1: all)
  })
