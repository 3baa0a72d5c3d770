"""Shared fixtures: tiny presets are written to disk once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def preset_root(tmp_path_factory):
    """One preset directory for the whole session: each family's tiny preset is
    save_pretrained there on first use and loaded by path afterwards."""
    return str(tmp_path_factory.mktemp("presets"))
