"""Shared test fixtures: paths to the sample data beside the clone, the reference oracle, seeding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED_DIR / "data"
SHARED_REFERENCE = SHARED_DIR / "reference"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"sample data folder {SHARED_DATA} is absent (it sits beside the clone in CI)",
)
requires_shared_reference = pytest.mark.skipif(
    not SHARED_REFERENCE.is_dir(),
    reason=f"reference folder {SHARED_REFERENCE} is absent (it sits beside the clone in CI)",
)

# Two pytest-xdist workers on two cores: one intra-op thread each keeps the suite from thrashing.
torch.set_num_threads(int(os.environ.get("MASKFORMER_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def two_torch_threads():
    """Two torch threads for one test (the suite pins one): results must not depend on the
    thread count (kernels split their work differently)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hf():
    """The transformers 4.34.1 oracle (test-only dependency)."""
    return pytest.importorskip("transformers", reason="transformers==4.34.1 (test extra) missing")
