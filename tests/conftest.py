"""Shared fixtures: where the real data lives, and fresh stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRAFFICCORE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (it lives in ../shared/data beside the repo)")
    return p


@pytest.fixture
def shared_data():
    """The ../shared/data folder (skips the test when it is absent)."""
    return shared_path()


@pytest.fixture
def store(tmp_path):
    """A fresh, empty store in a temporary folder."""
    from trafficcore.data.store import Store

    return Store(tmp_path / "test.duckdb")


@pytest.fixture(scope="session")
def town_template(tmp_path_factory):
    """The live-test city (`live_data`) imported once as dataset `town`; tests take copies of the file."""
    from live_data import live_store

    from trafficcore.data.store import Store

    path = tmp_path_factory.mktemp("town") / "town.duckdb"
    live_store(Store(path))
    return path


@pytest.fixture
def town(town_template, tmp_path):
    """A fresh copy of the live-test city's store, for one test to change."""
    from live_data import copy_of

    return copy_of(town_template, tmp_path / "town.duckdb")
