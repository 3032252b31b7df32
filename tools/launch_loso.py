"""Launches the LOSO folds of a run as separate processes, or prints one command per fold.

  python tools/launch_loso.py --config=configs/spotformer_synthetic.py --workdir=DIR \
      [--mode=local|print] [--parallel=2] [-- extra fes_jax.main flags]

Both modes first run the data stages once (``--stop_after=preprocess``), since every fold
needs them and they must not run concurrently. ``local`` then runs ``python -m fes_jax.main
... --fold=K`` for every fold, ``--parallel`` at a time, each logging to
``DIR/logs/fold_KKK.log``, and finally the run over all folds (evaluation, aggregation,
report; every trained fold is skipped). ``print`` prints the three steps as commands for a
scheduler (e.g. a Slurm job array over ``--fold``). Folds are resumable: rerunning skips what
is complete.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string("config", None, "Config file (with optional :args).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "print"], "Run here, or print commands.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Folds running at once in local mode.")


def _base(extra: list[str]) -> list[str]:
  return [sys.executable, "-m", "fes_jax.main", f"--config={_CONFIG.value}",
          f"--workdir={_WORKDIR.value}", *extra]


def _folds(workdir: pathlib.Path) -> list[str]:
  return json.loads((workdir / "data_summary.json").read_text())["folds"]


def main(argv):
  extra = argv[1:]
  workdir = pathlib.Path(_WORKDIR.value)
  data_cmd = _base(extra) + ["--stop_after=preprocess"]
  if _MODE.value == "print":
    print("# 1. data stages, once:")
    print(shlex.join(data_cmd))
    print("# 2. one job per fold, K = 0 .. (number of subjects - 1), e.g. a job array:")
    print(shlex.join(_base(extra)) + " --fold=$K")
    print("# 3. evaluation, aggregation and report over all folds:")
    print(shlex.join(_base(extra)))
    if (workdir / "data_summary.json").exists():
      print(f"# this workdir has {len(_folds(workdir))} folds")
    return 0
  subprocess.run(data_cmd, check=True)
  folds = _folds(workdir)
  logs = workdir / "logs"
  logs.mkdir(exist_ok=True)
  pending = list(range(len(folds)))
  running: dict[int, tuple[subprocess.Popen, object]] = {}
  failed = []
  while pending or running:
    while pending and len(running) < max(1, _PARALLEL.value):
      k = pending.pop(0)
      log = open(logs / f"fold_{k:03d}.log", "w")
      running[k] = (subprocess.Popen(_base(extra) + [f"--fold={k}"], stdout=log,
                                     stderr=subprocess.STDOUT), log)
      print(f"fold {k} ({folds[k]}): started, log {log.name}", flush=True)
    time.sleep(1)
    for k, (proc, log) in list(running.items()):
      if proc.poll() is not None:
        log.close()
        del running[k]
        status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"fold {k} ({folds[k]}): {status}", flush=True)
        if proc.returncode != 0:
          failed.append(k)
  if failed:
    print(f"folds {failed} failed; see {logs}; rerun to resume", file=sys.stderr)
    return 1
  return subprocess.run(_base(extra)).returncode


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
