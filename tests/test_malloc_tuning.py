"""fes_jax.malloc_tuning: the environment it adds, the opt-out, one re-exec."""

import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT
from fes_jax import malloc_tuning


def test_tunables_env():
  env = malloc_tuning.tunables_env({"PATH": "/bin"})
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": malloc_tuning.TUNABLES}
  # Other tunables are kept; the user's own malloc settings or the opt-out win.
  env = malloc_tuning.tunables_env({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX"})
  assert env["GLIBC_TUNABLES"] == "glibc.cpu.hwcaps=-AVX:" + malloc_tuning.TUNABLES
  assert malloc_tuning.tunables_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) is None
  assert malloc_tuning.tunables_env({"FES_JAX_MALLOC_TUNING": "0"}) is None


_SNIPPET = ("import os; from fes_jax import malloc_tuning; print('start', flush=True); "
            "malloc_tuning.reexec_with_tunables(); print(os.environ.get('GLIBC_TUNABLES'))")


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
@pytest.mark.parametrize("opt_out", [False, True])
def test_reexec_once(opt_out):
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["FES_JAX_MALLOC_TUNING"] = "0" if opt_out else "1"
  out = subprocess.run([sys.executable, "-c", _SNIPPET], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True).stdout.splitlines()
  if opt_out:
    assert out == ["start", "None"]
  else:  # the process ran again with the settings, and did not exec a second time
    assert out == ["start", "start", malloc_tuning.TUNABLES]
