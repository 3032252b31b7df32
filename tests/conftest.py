"""Shared test fixtures.

Tests that read the real annotation files find them in ``../shared/annotations`` (relative to
the project root) and skip when that folder is absent, as it is in a user's clone.
"""

import os
import pathlib

# Several simulated CPU devices for the multi-device tests; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_ANNOTATIONS = ROOT.parent / "shared" / "annotations"


@pytest.fixture(scope="session")
def shared_annotations() -> pathlib.Path:
  """The real annotation files; skips the test when ../shared is absent."""
  if not SHARED_ANNOTATIONS.is_dir():
    pytest.skip("../shared/annotations is absent (a user's clone has no ../shared)")
  return SHARED_ANNOTATIONS


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  """A persistent JAX compilation cache in a temporary directory for one test module: the
  several folds a module trains with identical programs compile once. Modules opt in with
  ``pytestmark = pytest.mark.usefixtures("compilation_cache")``."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=import-outside-toplevel

  cc.set_cache_dir(str(tmp_path_factory.mktemp("jax_cache")))
  cc.reset_cache()
  yield
  jax.config.update("jax_compilation_cache_dir", None)
  cc.reset_cache()
