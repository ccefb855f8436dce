"""Fixtures for every test module; plain helpers live in ``tests/helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import SAMPLE_VIDEOS

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make pytest` runs two processes on (often) two cores: one thread each
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` run where a GPU is; elsewhere they are deselected (listed as such), not skipped.

    ``STA_TEST_DEVICE=cpu`` (``benchmarks/gpu_check.sh --dry-run``) keeps them and runs them on the CPU."""
    if torch.cuda.is_available() or os.environ.get("STA_TEST_DEVICE") == "cpu":
        return
    deselected = [item for item in items if "cuda" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "cuda" not in item.keywords]


@pytest.fixture
def sample_videos() -> Path:
    """The folder of real sample clips that ships with the repository."""
    assert SAMPLE_VIDEOS.is_dir(), f"sample clips missing: {SAMPLE_VIDEOS}"
    return SAMPLE_VIDEOS
