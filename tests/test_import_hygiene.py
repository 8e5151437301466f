"""Storage and bench never import Textual (the app's toolkit): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _no_textual(code: str) -> None:
    res = subprocess.run([sys.executable, "-c", code + "; assert 'textual' not in sys.modules, "
                          "sorted(m for m in sys.modules if m.startswith('textual'))[:5]"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_backends_and_bench_do_not_import_textual():
    _no_textual("import imgtui.backends, imgtui.bench, sys")


@pytest.mark.parametrize("modules", [
    "imgtui.bench.backend_info, imgtui.bench.model, imgtui.bench.engine",
    "imgtui.bench.recommend, imgtui.bench.claims, imgtui.bench.plot, imgtui.bench.machine",
    "imgtui.bench.cli_bench, imgtui.cli",
])
def test_bench_modules_do_not_import_textual(modules):
    # the registry is read too: every backend class imported, the CLI parser with its generated flags built
    _no_textual(f"import sys, {modules}; from imgtui.bench import backend_info as bi; "
                "[bi.get(b) for b in bi.names()]; import imgtui.cli as c; c.build_parser()")
