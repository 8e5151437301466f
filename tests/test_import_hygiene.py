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
    "imgtui.bench.backend_info, imgtui.bench.model, imgtui.bench.run",
    "imgtui.bench.recommend, imgtui.bench.claims, imgtui.bench.plot, imgtui.bench.machine",
    "imgtui.bench.cli_bench, imgtui.cli",
])
def test_bench_modules_do_not_import_textual(modules):
    # the registry is read too: every backend class imported, the CLI parser with its generated flags built
    _no_textual(f"import sys, {modules}; from imgtui.bench import backend_info as bi; "
                "[bi.get(b) for b in bi.names()]; import imgtui.cli as c; c.build_parser()")


def test_import_contracts_hold():
    """The layer, UI and backend-independence contracts of pyproject.toml ([tool.importlinter])."""
    from pathlib import Path

    pytest.importorskip("importlinter")
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_broken_contract_is_caught(tmp_path):
    """The check can fail: a config whose layers are upside down is reported broken."""
    from pathlib import Path

    pytest.importorskip("importlinter")
    root = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "upside-down.toml"
    cfg.write_text('[tool.importlinter]\nroot_package = "imgtui"\n\n[[tool.importlinter.contracts]]\n'
                   'name = "upside down"\ntype = "layers"\nlayers = ["imgtui.backends", "imgtui.convert"]\n')
    res = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
                          "--config", str(cfg)], cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "BROKEN" in res.stdout
