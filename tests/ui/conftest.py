from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.helpers import Ui, fill_store, start_ui


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written by real proxy sessions, one per test module (the browser tests add live
    sessions to theirs)."""
    store = tmp_path_factory.mktemp("ui") / "store.db"
    fill_store(store)
    return store


@pytest.fixture(scope="module")
def ui(filled_store: Path) -> Iterator[Ui]:
    viewer = start_ui(filled_store)
    try:
        yield viewer
    finally:
        viewer.stop()
