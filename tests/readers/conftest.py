"""Fixtures of the intake tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the property tests' files (hypothesis wants no function-scoped fixture)."""
    return tmp_path_factory.mktemp("bad-input")
