"""Adding a backend is one package plus one registry line: a fake backend registered at test time
shows up in the CLI, bench, recommend, claims, plots and the app with no other edit."""

from __future__ import annotations

import sys
import textwrap

import pytest

from imgtui.backends import registry
from imgtui.bench import backend_info as bi
from imgtui.errors import ImgtuiError

MODULE = "imgtui_test_fake_backend"

FAKE_SOURCE = '''
"""A test backend: the disk backend under another name, with one extra option."""

from imgtui.backends.base import Option
from imgtui.backends.disk import DiskBackend, DiskReader, DiskWriter
from imgtui.errors import ImgtuiError

SHADES = ("grey", "blue")


class FakeWriter(DiskWriter):
    # the manifest keeps saying "disk": DiskReader checks for that name literally
    backend = "disk"

    @classmethod
    def check_options(cls, options):
        options = dict(options)
        shade = options.pop("shade", "grey")
        if shade not in SHADES:
            raise ImgtuiError(f"fake: shade must be one of {', '.join(SHADES)}, got {shade!r}")
        return {**super().check_options(options), "shade": shade}


class FakeReader(DiskReader):
    backend = "fake"


class FakeBackend(DiskBackend):
    name = "fake"
    display_name = "Fake (test files)"
    description = "the disk layout under another name"
    colour = "#123456"
    suffix = ".fake"
    writer_cls = FakeWriter
    reader_cls = FakeReader
    options = DiskBackend.options + (Option("shade", str, "grey", "tint of nothing", choices=SHADES),)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Register the fake backend: a module written here plus one entry in ``registry.BACKENDS``."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(FAKE_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    # a known registry: the core backends plus the fake one (optional backends come and go)
    core = {name: registry.BACKENDS[name] for name in ("disk", "lmdb", "hdf5")}
    monkeypatch.setattr(registry, "BACKENDS", {**core, "fake": (MODULE, "FakeBackend", "")})
    yield "fake"
    sys.modules.pop(MODULE, None)


def test_the_registry_reads_the_new_line(fake):
    assert bi.names() == ["disk", "lmdb", "hdf5", "fake"]
    assert bi.short_name("fake") == "Fake" and bi.plain_name("fake") == "test files"
    assert bi.colour("fake") == "#123456" and bi.store_suffix("fake") == ".fake"
    assert bi.store_suffix("disk") == ".disk" and bi.store_suffix("hdf5") == ".h5"


# -- CLI ---------------------------------------------------------------------------------------
def _subparser(parser, name):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def test_convert_offers_the_backend_and_its_option_flags(fake):
    from imgtui.cli import backend_options_from_args, build_parser

    parser = build_parser()
    convert = _subparser(parser, "convert")
    backend = next(a for a in convert._actions if "--backend" in a.option_strings)
    assert "fake" in backend.choices
    assert {"--shade", "--fake-shade", "--fake-png-level", "--png-level"} <= set(convert._option_string_actions)
    assert "--shade" in convert.format_help() and "fake: tint of nothing" in convert.format_help()

    args = parser.parse_args(["convert", "src", "dst", "-b", "fake", "--shade", "blue", "--png-level", "3"])
    assert backend_options_from_args(args, "fake") == {"fake": {"shade": "blue", "png_level": 3}}
    # the shared --png-level still reaches disk and lmdb; the fake option does not reach disk
    args = parser.parse_args(["convert", "src", "dst", "-b", "disk", "--png-level", "3"])
    assert backend_options_from_args(args, "disk") == {"disk": {"png_level": 3}}


def test_convert_writes_and_reads_a_fake_store(fake, tmp_path, capsys):
    from imgtui.backends import open_store
    from imgtui.cli import main

    dest = tmp_path / "x.fake"
    assert main(["convert", "synthetic:count=5,size=8", str(dest), "-b", "fake", "--shade", "blue", "-q"]) == 0
    with open_store(dest, "fake") as r:
        assert len(r) == 5 and r.info()["options"]["shade"] == "blue"


@pytest.mark.parametrize("argv, message", [
    (["--shade", "red"], "imgtui: error: --shade: 'red' is not one of grey, blue"),
    (["--fake-png-level", "12"], "imgtui: error: --fake-png-level: '12' must be from 0 to 9"),
    (["--fake-png-level", "x"], "imgtui: error: --fake-png-level: 'x' is not a whole number"),
])
def test_bad_option_values_are_one_line_errors(fake, tmp_path, capsys, argv, message):
    from imgtui.cli import main

    assert main(["convert", "synthetic:count=3", str(tmp_path / "x"), "-b", "fake", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip() == message
    assert not (tmp_path / "x").exists()


def test_an_option_of_the_fake_backend_is_refused_for_another(fake, tmp_path, capsys):
    from imgtui.cli import main

    assert main(["convert", "synthetic:count=3", str(tmp_path / "x"), "-b", "hdf5", "--shade", "blue"]) == 2
    assert capsys.readouterr().err.strip() == "imgtui: error: --shade applies to the fake backend, not hdf5"


# -- bench -------------------------------------------------------------------------------------
def test_bench_plan_validation_knows_the_backend(fake, tmp_path):
    from imgtui.bench.plan import PlanError, plan_steps, validate_plan
    from imgtui.bench.model import BenchPlan

    assert BenchPlan().backends == ["disk", "lmdb", "hdf5", "fake"]
    plan = BenchPlan(backends=["fake"], backend_options={"fake": {"shade": "blue"}}, methods=["article", "imgtui"],
                     experiments=["store_many"], counts=[10], workdir=str(tmp_path))
    validate_plan(plan)
    # the article has no fake functions: only imgtui measures it
    assert {(s.backend, s.method) for s in plan_steps(plan)} == {("fake", "imgtui")}
    with pytest.raises(PlanError, match="fake: shade must be one of grey, blue"):
        validate_plan(BenchPlan(backends=["fake"], backend_options={"fake": {"shade": "red"}}, methods=["imgtui"]))
    with pytest.raises(PlanError, match=r"unknown backend 'nope' \(choose from disk, lmdb, hdf5, fake\)"):
        validate_plan(BenchPlan(backends=["nope"], methods=["imgtui"]))


def test_bench_cli_takes_the_backend_and_its_flags(fake, tmp_path):
    from imgtui.bench.cli_bench import BenchUsageError, plan_from_args
    from imgtui.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["bench", "--backends", "fake,disk", "--shade", "blue", "--png-level", "2",
                              "--workdir", str(tmp_path)])
    plan = plan_from_args(args)
    assert plan.backends == ["fake", "disk"]
    assert plan.backend_options == {"fake": {"shade": "blue", "png_level": 2}, "disk": {"png_level": 2}}
    assert parser.parse_args(["bench"]).backends is None
    assert plan_from_args(parser.parse_args(["bench"])).backends == ["disk", "lmdb", "hdf5", "fake"]
    with pytest.raises(BenchUsageError, match=r"--backends: unknown 'nope' \(choose from disk, lmdb, hdf5, fake\)"):
        plan_from_args(parser.parse_args(["bench", "--backends", "nope"]))


def test_a_tiny_benchmark_measures_the_fake_backend(fake, tmp_path):
    from imgtui.bench.run import run_to_table
    from imgtui.bench.model import BenchPlan
    from imgtui.bench.plot import backend_color, save_plot

    table = run_to_table(BenchPlan(dataset="synthetic:count=20,size=8", backends=["fake", "disk"],
                                   backend_options={"fake": {"shade": "blue"}}, methods=["imgtui"],
                                   experiments=["store_many", "read_many"], counts=[10], repeats=1,
                                   workdir=str(tmp_path)))
    rows = [r for r in table.rows if r.backend == "fake"]
    assert rows and all(r.error is None for r in rows)
    assert all("shade=blue" in r.options for r in rows)
    assert backend_color("fake") == "#123456"
    svg = save_plot(table, tmp_path / "f.svg").read_text()
    assert "#123456" in svg and "imgtui fake" in svg


# -- recommend and claims ----------------------------------------------------------------------
def _rows(rates: dict[str, float]):
    from imgtui.bench.model import ResultRow, ResultTable

    return ResultTable(rows=[ResultRow("random_batches", b, "imgtui", 1000, records_per_s=v) for b, v in rates.items()]
                       + [ResultRow("disk_usage", b, "imgtui", 1000, bytes_on_disk=10_000_000, raw_bytes=3_072_000,
                                    cache="") for b in rates])


def test_recommend_chooses_among_the_registry(fake):
    from imgtui.bench.recommend import Needs, Profile, candidates, recommend, small_plan

    assert candidates() == ("disk", "lmdb", "hdf5", "fake")
    assert small_plan("synthetic", ["random_batches"]).backends == ["disk", "lmdb", "hdf5", "fake"]
    table = _rows({"disk": 1e4, "lmdb": 5e5, "hdf5": 4e5, "fake": 9e5})
    rec = recommend(Profile(count=1_000_000, total_bytes=3_072_000_000), Needs(access="random"), table)
    assert rec.backend == "fake" and rec.name == "Fake (test files)"
    assert set(rec.scores) == {"disk", "lmdb", "hdf5", "fake"}
    assert any(r.startswith("test files: ") and "faster random batches" in r for r in rec.reasons)
    # the candidates can be narrowed; rows of the others are then ignored
    assert recommend(Profile(count=10**6), Needs(), table, ["disk", "hdf5"]).backend == "hdf5"


def test_recommend_names_an_unknown_backend_in_one_line(fake, capsys):
    from imgtui.bench.recommend import Needs, Profile, recommend
    from imgtui.cli import main

    with pytest.raises(ImgtuiError, match=r"^unknown backend 'nope' \(choose from disk, lmdb, hdf5, fake\)$"):
        recommend(Profile(), Needs(), _rows({"disk": 1.0}), ["nope"])
    assert main(["recommend", "--results", "/no/such.json", "--backends", "lmdb,nope"]) == 1
    err = capsys.readouterr().err
    assert err == "imgtui: error: unknown backend 'nope' (choose from disk, lmdb, hdf5, fake)\n"


def test_rows_of_an_unregistered_backend_do_not_break_recommend():
    # a results file from an install with more backends: rows of a name not registered here are ignored
    from imgtui.bench.recommend import Needs, Profile, recommend

    rec = recommend(Profile(count=10**6), Needs(), _rows({"disk": 1e4, "lmdb": 5e5, "nosuch": 9e5}))
    assert rec.backend == "lmdb" and "nosuch" not in rec.scores


def test_claims_measure_and_show_the_backend(fake):
    from imgtui.bench.claims import _rate_line, claims_plan

    assert claims_plan().backends == ["disk", "lmdb", "hdf5", "fake"]
    assert _rate_line("read", {"disk": 1e3, "fake": 2e3}) == "read: Fake 2.0k vs disk 1.0k records/s"


# -- the app -----------------------------------------------------------------------------------
async def test_the_app_pane_lists_the_backend_and_its_option(fake, tmp_path):
    from textual.widgets import Checkbox, Select

    from imgtui.tui.app import make_app
    from imgtui.tui.screens.main import store_paths
    from imgtui.tui.widgets.backend_pane import BackendPane

    app = make_app("synthetic:count=20,size=8")
    async with app.run_test(size=(140, 44)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        pane = screen.query_one(BackendPane)
        box = pane.query_one("#use-fake", Checkbox)
        assert str(box.label) == "Fake" and box.value
        assert screen.plan.backends == ["disk", "lmdb", "hdf5", "fake"]
        shade = pane.query_one("#fake-shade", Select)
        assert shade.value == "grey"
        assert not pane.query("#fake-png-level")  # png level is shared with disk's field
        shade.value = "blue"
        await pilot.pause()
        assert screen.plan.backend_options["fake"] == {"png_level": 1, "shade": "blue"}
        await pilot.click("#use-fake")
        await pilot.pause()
        assert "fake" not in screen.plan.backends and shade.disabled
        assert "Fake" in app.sub_title
    assert store_paths(str(tmp_path), "synthetic", ["fake"]) == [
        ("fake", str(tmp_path.absolute() / "imgtui-stores" / "synthetic.fake"))]


def test_an_option_that_requires_another_is_refused_in_one_line_without_it(tmp_path, capsys):
    """Option.requires, declared once: the CLI refuses the flag naming what it needs (as the user
    named flags), and accepts it with the other option set."""
    from imgtui.cli import main

    dest = tmp_path / "x.h5"
    assert main(["convert", "synthetic:count=3,size=4", str(dest), "-b", "hdf5", "--hdf5-level", "3", "-q"]) == 2
    assert main(["convert", "synthetic:count=3,size=4", str(dest), "-b", "hdf5", "--level", "3", "-q"]) == 2
    assert main(["convert", "synthetic:count=3,size=4", str(tmp_path / "x.lmdb"), "-b", "lmdb", "--png-level", "3", "-q"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["imgtui: error: --hdf5-level applies only with --hdf5-compression gzip",
                   "imgtui: error: --level applies only with --compression gzip",
                   "imgtui: error: --png-level applies only with --encoding png"]
    assert not dest.exists()
    assert main(["convert", "synthetic:count=3,size=4", str(dest), "-b", "hdf5", "--level", "3",
                 "--compression", "gzip", "-q"]) == 0


def test_a_suffix_in_the_registry_line_is_the_backends_own():
    for name in registry.available():
        assert registry.suffix_of(name) == registry.get_backend(name).suffix


def test_opening_a_store_imports_only_the_backends_it_needs(tmp_path):
    """An LMDB store opens without importing zarr (~0.3 s of the first open in a process)."""
    import subprocess

    import imgtui
    from imgtui.datasets import SyntheticDataset

    store = tmp_path / "s.lmdb"
    with imgtui.writer(store, "lmdb") as w:
        w.write_many(SyntheticDataset(count=3, size=4))
    code = ("import sys, imgtui; r = imgtui.open(sys.argv[1]); r[2]; "
            "print(sorted(m for m in ('zarr', 'imgtui.backends.zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_listing_the_backends_does_not_import_zarr():
    """Every CLI command builds its flags from the registry: that must not import zarr-python (it
    cost ~0.4-0.9 s per command); a Zarr store still opens (its module is imported then)."""
    import subprocess
    import sys

    code = ("import sys, imgtui.cli; imgtui.cli.build_parser(); from imgtui.backends import registry; "
            "assert 'zarr' in registry.available(); print('zarr' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_backend_whose_package_is_missing_is_one_line_and_not_available(monkeypatch):
    import importlib.util

    from imgtui.backends import registry
    from imgtui.errors import ImgtuiError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a))
    with pytest.raises(ImgtuiError, match=r"^backend zarr needs an optional package: pip install 'imgtui\[zarr\]'"):
        registry.get_backend("zarr")
    assert "zarr" not in registry.available() and "lmdb" in registry.available()


def test_implied_option_values_are_what_the_writers_fill_in():
    """An option that applies under another's value and has no default declares the value the
    writer fills in (``Option.implied``), so the app shows it without importing the writer."""
    for name in registry.available():
        cls = registry.get_backend(name)
        for opt in cls.options:
            if opt.requires is None or opt.default is not None:
                continue
            other, allowed = opt.requires
            assert cls.writer_cls.check_options({other: allowed[0]})[opt.name] == opt.implied, f"{name}.{opt.name}"


def test_the_app_starts_without_importing_zarr():
    """The backend pane shows every backend's options (zarr's too) without importing zarr-python
    (it made the first paint ~0.3-0.9 s later)."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "from imgtui.tui.app import ImgtuiApp\n"
        "async def main():\n"
        "    app = ImgtuiApp()\n"
        "    async with app.run_test(size=(160, 48)) as pilot:\n"
        "        await pilot.pause(0.3)\n"
        "        shown = [w.id for w in app.screen.query('*') if (w.id or '').startswith('zarr-')]\n"
        "    print(bool(shown), 'zarr' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True False"
