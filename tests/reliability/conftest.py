"""Fixtures of the fault-injection suite (tests/reliability): a tiny checkpoint, built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from rel_helpers import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid checkpoint directory (seconds to build, one thread); tests must not modify it."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
