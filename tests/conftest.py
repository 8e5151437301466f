"""Every test keeps imgtui's results folder (claims/recommend reuse) in its own temporary folder,
never the user's ~/.cache/imgtui/results."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _results_folder(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("IMGTUI_RESULTS", str(tmp_path_factory.mktemp("results")))
