"""recommend(): contrasting profiles and needs give different backends, each reason quoting a figure."""

from __future__ import annotations

import json

import pytest

from imgtui.bench.model import ResultRow, ResultTable
from imgtui.bench.recommend import Needs, NeedsError, Profile, missing_experiments, recommend
from imgtui.cli import main

LMDB_OPTS = "block_bytes=262144,encoding=raw,map_size=67108864,png_level=1"


def rate(exp: str, backend: str, rps: float, count: int = 2000, readers: int | None = None) -> ResultRow:
    return ResultRow(exp, backend, "imgtui", count, repeats=3, median_s=count / rps, min_s=count / rps,
                     records_per_s=rps, readers=readers)


def latency(backend: str, seconds: float, count: int = 2000) -> ResultRow:
    return ResultRow("read_one", backend, "imgtui", count, repeats=3, median_s=seconds, min_s=seconds,
                     records_per_s=1 / seconds)


def usage(backend: str, nbytes: int, raw: int, count: int = 2000) -> ResultRow:
    return ResultRow("disk_usage", backend, "imgtui", count, bytes_on_disk=nbytes, raw_bytes=raw, cache="")


def mutate(backend: str, op: str, seconds: float, in_place: bool, n: int, count: int = 2000) -> ResultRow:
    flag = "yes" if in_place else "no"
    return ResultRow("mutate", backend, "imgtui", count, repeats=1, median_s=seconds, min_s=seconds,
                     records_per_s=n / seconds, cache="",
                     detail=f"op={op} n={n} in_place={flag} valid=yes | {backend} {op}")


def table(*rows: ResultRow) -> ResultTable:
    return ResultTable(rows=list(rows), dataset="test")


# -- four contrasting profiles -------------------------------------------------------------------
def test_small_static_png_friendly_set_gets_disk():
    profile = Profile(count=500, total_bytes=500 * 3072, fixed_size=True, shape="32x32x3")
    results = table(
        rate("random_batches", "disk", 20_000), rate("random_batches", "lmdb", 400_000), rate("random_batches", "hdf5", 150_000),
        rate("read_many", "disk", 21_000), rate("read_many", "lmdb", 900_000), rate("read_many", "hdf5", 1_200_000),
        usage("disk", 8_000_000, 6_144_000), usage("lmdb", 6_500_000, 6_144_000), usage("hdf5", 6_300_000, 6_144_000),
    )
    rec = recommend(profile, Needs(access="random"), results)
    assert rec.backend == "disk"
    assert any("small set" in r and "20.0k records/s" in r for r in rec.reasons)
    # what was given up is said with figures too
    assert any("LMDB" in t and "400.0k vs 20.0k" in t for t in rec.tradeoffs)


def test_large_training_set_read_in_random_batches_gets_the_faster_of_lmdb_and_hdf5():
    profile = Profile(count=100_000, total_bytes=100_000 * 3072, fixed_size=True, shape="32x32x3")
    results = table(
        rate("random_batches", "disk", 9_000), rate("random_batches", "lmdb", 612_000), rate("random_batches", "hdf5", 210_000),
        usage("disk", 9_000_000, 6_144_000), usage("lmdb", 6_300_000, 6_144_000), usage("hdf5", 6_200_000, 6_144_000),
    )
    rec = recommend(profile, Needs(access="random"), results)
    assert rec.backend == "lmdb"
    assert "LMDB: 2.9x faster random batches than HDF5 on your images (612.0k vs 210.0k records/s)" in rec.reasons
    assert rec.missing == [] and rec.measured == ["disk_usage", "random_batches"]
    # the same profile with HDF5 measured faster flips the answer: the figures decide, not a rule
    flipped = table(*(r for r in results.rows if not (r.experiment == "random_batches" and r.backend == "hdf5")),
                    rate("random_batches", "hdf5", 900_000))
    rec2 = recommend(profile, Needs(access="random"), flipped)
    assert rec2.backend == "hdf5"
    assert any("900.0k vs 612.0k" in r for r in rec2.reasons)


def test_growing_dataset_follows_the_mutate_rows():
    profile = Profile(count=20_000, total_bytes=20_000 * 12_288, fixed_size=True, shape="64x64x3")
    results = table(
        rate("read_many", "disk", 10_000), rate("read_many", "lmdb", 200_000), rate("read_many", "hdf5", 250_000),
        mutate("disk", "append", 0.050, True, 200), mutate("lmdb", "append", 0.020, True, 200),
        mutate("hdf5", "append", 0.800, False, 200),
        usage("disk", 200_000_000, 245_760_000), usage("lmdb", 250_000_000, 245_760_000), usage("hdf5", 246_000_000, 245_760_000),
    )
    rec = recommend(profile, Needs(access="sequential", changes="growing"), results)
    assert rec.backend == "lmdb"
    assert any("appends" in r and "20.0 ms in place" in r for r in rec.reasons)
    assert "slice_read" in rec.missing  # asked for, not in the table: said, not hidden
    # when the appends favour HDF5 instead, HDF5 wins
    results2 = table(*(r for r in results.rows if r.experiment != "mutate"),
                     mutate("disk", "append", 0.050, True, 200), mutate("lmdb", "append", 0.900, False, 200),
                     mutate("hdf5", "append", 0.010, True, 200))
    assert recommend(profile, Needs(access="sequential", changes="growing"), results2).backend == "hdf5"
    assert recommend(profile, Needs(access="sequential", changes="growing"), results2).options == {"layout": "chunked"}


def test_16bit_variable_size_scans_archive_gets_the_smallest_store():
    profile = Profile(count=300_000, total_bytes=300_000 * 2 * 512 * 512, fixed_size=False, bit_depth=16, channels=1)
    results = table(
        latency("disk", 0.006), latency("lmdb", 0.004), latency("hdf5", 0.005),
        usage("disk", 86_000_000, 157_000_000, 300), usage("lmdb", 158_600_000, 157_000_000, 300),
        usage("hdf5", 160_000_000, 157_000_000, 300),
    )
    rec = recommend(profile, Needs(access="single"), results)
    assert rec.backend == "disk"
    assert any("1.8x smaller on disk than LMDB" in r and "86.0 MB vs 158.6 MB" in r for r in rec.reasons)
    assert any("16-bit" in r for r in rec.reasons)
    assert any("4.0 ms vs 6.0 ms" in t for t in rec.tradeoffs)


def test_hard_needs_and_bad_needs():
    profile = Profile(count=100_000, total_bytes=10**9)
    results = table(rate("random_batches", "disk", 9_000), rate("random_batches", "lmdb", 612_000),
                    rate("random_batches", "hdf5", 210_000))
    assert recommend(profile, Needs(single_file=True), results).backend == "hdf5"
    assert recommend(profile, Needs(people_open_files=True), results).backend == "disk"
    both = recommend(profile, Needs(people_open_files=True, single_file=True), results)
    assert both.backend == "hdf5" and any("image viewer" in t for t in both.tradeoffs)
    with pytest.raises(NeedsError, match="access must be one of sequential, random, single, got 'sideways'"):
        Needs(access="sideways")
    assert missing_experiments(Needs(readers="many", changes="changing"), None) == [
        "disk_usage", "random_batches", "mutate", "parallel_processes"]


def test_cli_recommend_results_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    table(
        rate("random_batches", "disk", 9_000, 100_000), rate("random_batches", "lmdb", 612_000, 100_000),
        rate("random_batches", "hdf5", 210_000, 100_000),
        usage("disk", 9_000_000, 6_144_000, 100_000), usage("lmdb", 6_300_000, 6_144_000, 100_000),
        usage("hdf5", 6_200_000, 6_144_000, 100_000),
    ).to_json(path)
    assert main(["recommend", "--results", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "lmdb"
    assert "LMDB: 2.9x faster random batches than HDF5 on your images (612.0k vs 210.0k records/s)" in out["reasons"]
    assert out["needs"]["access"] == "random" and out["profile"]["count"] == 100_000
    # a missing results file: one line, exit 1
    assert main(["recommend", "--results", str(tmp_path / "nope.json")]) == 1
    assert capsys.readouterr().err.strip() == f"imgtui: error: {tmp_path / 'nope.json'}: no such results file"
    assert main(["recommend"]) == 2


def test_cli_recommend_measures_what_is_missing(tmp_path, capsys):
    """With --dataset, the missing experiments run on the dataset (a tiny one here)."""
    assert main(["recommend", "--dataset", "synthetic:count=40,size=8", "--access", "sequential",
                 "--count", "40", "--workdir", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] in ("disk", "lmdb", "hdf5")
    assert set(out["measured"]) >= {"read_many", "disk_usage", "slice_read"} and out["missing"] == []
    assert out["profile"]["count"] == 40 and out["profile"]["shape"] == "8x8x3"


async def _recommend_now(app, pilot):
    """Open the recommend screen (r), press Recommend and wait for its run."""
    from imgtui.tui.screens.recommend import RecommendScreen

    await pilot.press("r")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, RecommendScreen)
    await pilot.click("#rec-go")
    await app.workers.wait_for_complete()
    await pilot.pause()
    return screen


async def test_recommend_screen_shows_a_recommendation(tmp_path):
    from imgtui.tui.app import make_app
    from imgtui.tui.screens.recommend import RecommendScreen

    app = make_app("synthetic:count=60,size=16", workdir=str(tmp_path))
    async with app.run_test(size=(140, 44)) as pilot:
        await app.workers.wait_for_complete()
        # the main screen's results are used: nothing needs measuring for random access
        app.main_screen.last_results = table(
            rate("random_batches", "disk", 9_000, 60), rate("random_batches", "lmdb", 612_000, 60),
            rate("random_batches", "hdf5", 210_000, 60),
            usage("disk", 258_000, 46_080, 60), usage("lmdb", 98_000, 46_080, 60), usage("hdf5", 122_000, 46_080, 60),
        )
        screen = await _recommend_now(app, pilot)
        rec = screen.recommendation
        assert rec is not None and rec.backend == "disk" and rec.missing == []
        text = str(screen.query_one("#rec-output").content)
        assert "Recommended: disk (PNG files)" in text
        assert "PNG files read all 60 records" in text and "9.0k records/s" in text
        assert "LMDB: 68.0x faster random batches than PNG files on your images (612.0k vs 9.0k records/s)" in text
        # single file: HDF5, said why
        screen.query_one("#rec-single").value = True
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.recommendation.backend == "hdf5"
        assert "single .h5 file" in str(screen.query_one("#rec-output").content)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RecommendScreen)


async def test_recommend_screen_measures_in_a_child_process_and_reuses_the_results_folder(tmp_path, monkeypatch):
    """What the needs ask for and the app lacks is measured in a child process (never the app's),
    kept in the results folder, and reused by the next recommendation."""
    import os

    from imgtui.bench import runner as runner_mod
    from imgtui.tui.app import make_app

    pids: list[int | None] = []
    real_events = runner_mod.RecommendRunner.events

    def events(self, cancelled=None):
        for ev in real_events(self, cancelled):
            pids.append(self.pid)
            yield ev

    monkeypatch.setattr(runner_mod.RecommendRunner, "events", events)
    folder = tmp_path / "results"
    monkeypatch.setenv("IMGTUI_RESULTS", str(folder))
    app = make_app("synthetic:count=30,size=8", workdir=str(tmp_path))
    async with app.run_test(size=(140, 44)) as pilot:
        await app.workers.wait_for_complete()
        screen = await _recommend_now(app, pilot)
        first = screen.recommendation
        assert first is not None and first.backend
        assert pids and all(p is not None and p != os.getpid() for p in pids)
        assert any(folder.iterdir())  # the measurements are kept
        assert not any(n.startswith("reused") for n in first.notes)
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        second = screen.recommendation
        assert any(n.startswith("reused") for n in second.notes), second.notes
        assert second.backend == first.backend
    assert [p for p in os.listdir(tmp_path) if p.startswith("imgtui-child-")] == []


async def test_recommend_screen_recommends_when_the_results_folder_cannot_be_written(tmp_path, monkeypatch):
    from imgtui.tui.app import make_app

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IMGTUI_RESULTS", str(blocker / "results"))
    app = make_app("synthetic:count=20,size=8", workdir=str(tmp_path))
    shown: list[tuple[str, str]] = []
    notify = app.notify
    monkeypatch.setattr(app, "notify", lambda message, **k: (shown.append((str(message), k.get("severity"))),
                                                             notify(message, **k))[1])
    async with app.run_test(size=(140, 44)) as pilot:
        await app.workers.wait_for_complete()
        screen = await _recommend_now(app, pilot)
        assert screen.recommendation is not None and screen.recommendation.backend
        assert (f"Measurements are not kept: cannot write {blocker / 'results'} (Not a directory).", "warning") in shown
