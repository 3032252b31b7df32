"""Data-parallel training of the spotting models (one LOSO fold per train stage).

Modules:
  state       TrainState, AdamW with the reference's weight-decay mask, per-epoch lr decay.
  step        jitted train / eval steps (donated state, masked loss, NaN guard, bf16 option).
  mesh        the 'data' mesh, shardings, ``jax.distributed.initialize`` when multi-process.
  checkpoint  orbax CheckpointManager per fold (save every epoch, resume from the latest).
  metrics     TensorBoard event files and the JSON history.
  loop        the epoch loop (``fit``).
  data        split statistics, batches, predictions from the segment TFRecords.
  fold        the stage entry: ``train_stage(ctx)`` and ``run_fold(...)``.
  parallel    fold-parallel training (``train.fold_parallel``): a group of folds in one
              vmapped program, ``run_folds_parallel(...)``.

Submodules are imported on use (``from fes_jax.train import fold``); this package imports
nothing heavy by itself.
"""
