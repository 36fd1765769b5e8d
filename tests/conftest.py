"""Shared fixtures: tiny models, synthetic images, the shared real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset

SHARED_DATA = Path(
    os.environ.get("CRYOSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

# One intra-op thread: tests run beside Qt threads and each other; oversubscribed BLAS
# threads on 2 cores were measured up to 100x slower than one thread.
# CRYOSEG_TEST_THREADS=N runs the suite with N threads (to check a test holds with more).
torch.set_num_threads(int(os.environ.get("CRYOSEG_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `slow` tests (real training) run by default and in CI; `-m "not slow"` leaves them out
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def tiny_model() -> ModelFile:
    """An untrained depth-3, 8-channel binary U-Net (seeded)."""
    return ModelFile.new(preset("tiny"), seed=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never let a test write autosaves or recent-model lists into the user's home."""
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("CRYOSEG_PROJECT_DIR", str(base / "projects"))
    monkeypatch.setenv("CRYOSEG_CONFIG_DIR", str(base / "config"))


@pytest.fixture(autouse=True)
def _private_step_time_cache(tmp_path_factory, monkeypatch):
    """Step times measured by a test stay in that test (never in the user's cache)."""
    from napari_cryoseg.engine.training import step_time

    monkeypatch.setenv(step_time.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    step_time.forget_step_times()
    yield
    step_time.forget_step_times()


REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _nothing_written_to_the_working_directory(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path_factory: pytest.TempPathFactory):
    """Run each test in an empty folder: a relative or empty output path (``--out ''``)
    lands there, not in the repository (``a0_labels.tif`` was once committed that way);
    the test fails if it leaves files there."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    yield
    left = sorted(p.name for p in cwd.iterdir())
    assert not left, f"the test wrote {left} into the working directory"
