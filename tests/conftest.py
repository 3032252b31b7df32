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
