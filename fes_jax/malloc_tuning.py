"""glibc malloc settings that keep XLA's CPU buffers mapped between steps.

XLA on CPU allocates each step's temporary buffer (3.4 GB for SpotFormer's training step at
batch 512) with ``malloc``. glibc serves an allocation that large from a fresh ``mmap`` (a
worker thread's arena cannot hold it) and returns it with ``munmap`` when the step ends, so
every step faults in and zeroes every page again: about 830,000 page faults and a seventh of
the step's time (README "Speed"). With one arena, no ``mmap`` for allocations and no trimming,
freed buffers stay in the heap and the next step reuses them: measured 1.13x faster training
at batch 512 (1.16 M page faults instead of 6.0 M for the same run). The cost: the process
keeps its peak heap until it exits.

glibc reads these settings (``GLIBC_TUNABLES``) only at process start, so the entry points
(``python -m fes_jax.main``, ``tools/benchmark.py``) call :func:`reexec_with_tunables` first:
it re-executes the same command with the settings added, once. Set ``FES_JAX_MALLOC_TUNING=0``
to keep the process's allocator as it is; a ``GLIBC_TUNABLES`` that already names any
``glibc.malloc.*`` setting is left alone too (the user's choice wins).
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=68719476736")
OPT_OUT = "FES_JAX_MALLOC_TUNING"


def tunables_env(environ: dict[str, str]) -> dict[str, str] | None:
  """The environment to re-execute with, or None when nothing should change."""
  if environ.get(OPT_OUT, "1") == "0":
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc." in current:
    return None  # set already: by an earlier re-exec, or by the user
  return {**environ, "GLIBC_TUNABLES": f"{current}:{TUNABLES}" if current else TUNABLES}


def reexec_with_tunables() -> None:
  """Re-executes this process with :data:`TUNABLES` (Linux with glibc only; else returns)."""
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return
  env = tunables_env(dict(os.environ))
  if env is None or not getattr(sys, "orig_argv", None):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
