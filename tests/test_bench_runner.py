"""The benchmark in a child process (``imgtui.bench.runner``): events stream back, cancel stops the
child and leaves no temporary store, a child that dies is one line. No timing asserts beyond
generous bounds against hangs (the machine is shared)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from imgtui.bench.model import BenchPlan, Finished, Progress, Result, Started
from imgtui.bench.plan import PlanError
from imgtui.bench.runner import CHILD_NICE, BenchRunner, ChildDiedError, StoresRunner
from imgtui.errors import ImgtuiError

#: an upper bound against hangs only
HANG = 30.0


def _long_plan(work) -> BenchPlan:
    return BenchPlan(dataset="synthetic:count=20000,size=16", backends=["lmdb"], methods=["imgtui"],
                     experiments=["store_many"], counts=[20000], repeats=50, workdir=str(work))


def _writing(ev) -> bool:
    """A Progress of store_many (the records are loaded: its total is repeats x count)."""
    return isinstance(ev, Progress) and ev.total > 20000 and ev.done > 0


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_streams_its_events_from_a_child_process(tmp_path):
    plan = BenchPlan(dataset="synthetic:count=100,size=8", backends=["lmdb", "hdf5"], methods=["imgtui", "floor"],
                     experiments=["store_many", "read_many"], counts=[10, 100], repeats=1, workdir=str(tmp_path))
    runner = BenchRunner(plan)
    kinds, rows, pids, nice = [], [], set(), None
    for ev in runner.events():
        kinds.append(type(ev))
        pids.add(runner.pid)
        if isinstance(ev, Started) and nice is None:
            nice = psutil.Process(runner.pid).nice()
        if isinstance(ev, Result):
            rows.append(ev.row)
    assert pids and os.getpid() not in pids  # measured in another process
    assert nice == min(19, os.nice(0) + CHILD_NICE)  # the app's drawing goes first when the CPU is short
    assert kinds[-1] is Finished and Started in kinds and Progress in kinds
    assert {(r.backend, r.experiment) for r in rows if r.method == "imgtui"} == {
        (b, e) for b in ("lmdb", "hdf5") for e in ("store_many", "read_many")}
    assert all(r.error is None for r in rows)
    assert os.listdir(tmp_path) == []  # the child's scratch folder is gone
    assert _gone(runner.job.process.pid)


def test_the_finished_table_keeps_the_plan_s_workdir(tmp_path):
    plan = BenchPlan(dataset="synthetic:count=10,size=8", backends=["lmdb"], methods=["imgtui"],
                     experiments=["store_many"], counts=[10], repeats=1, workdir=str(tmp_path))
    fin = [ev for ev in BenchRunner(plan).events() if isinstance(ev, Finished)][0]
    assert fin.results.plan["workdir"] == str(tmp_path) and not fin.cancelled and len(fin.results.rows) == 1


def test_the_app_s_runner_reuses_the_results_folder_unless_fresh(tmp_path):
    """As imgtui bench: a second run of the same plan gives the kept figures at once (as Result
    events before anything is measured); fresh measures them again."""
    plan = BenchPlan(dataset="synthetic:count=20,size=8", backends=["lmdb", "hdf5"], methods=["imgtui"],
                     experiments=["store_many"], counts=[20], repeats=1, workdir=str(tmp_path))

    def run(fresh=False):
        evs = list(BenchRunner(plan, fresh=fresh).events())
        return evs, evs[-1]

    first, fin1 = run()
    assert any(isinstance(e, Started) for e in first) and not any(n.startswith("reused") for n in fin1.results.notes)
    again, fin2 = run()
    assert not any(isinstance(e, (Started, Progress)) for e in again)  # nothing measured
    assert [type(e) for e in again] == [Result, Result, Finished]
    key = lambda r: (r.backend, r.median_s)  # noqa: E731
    assert sorted(map(key, (e.row for e in again[:2]))) == sorted(map(key, fin1.results.rows))
    assert sorted(map(key, fin2.results.rows)) == sorted(map(key, fin1.results.rows))
    assert any(n.startswith("reused 2 figures") for n in fin2.results.notes)
    fresh, fin3 = run(fresh=True)
    assert any(isinstance(e, Started) for e in fresh) and not any(n.startswith("reused") for n in fin3.results.notes)
    assert os.listdir(tmp_path) == []


def test_cancel_stops_the_child_and_leaves_no_temporary_store(tmp_path):
    runner = BenchRunner(_long_plan(tmp_path))
    asked = [False]
    t0 = None
    seen_temp = False
    events = []
    for ev in runner.events(lambda: asked[0]):
        events.append(ev)
        if _writing(ev) and t0 is None:  # store_many is writing
            seen_temp = any(os.scandir(tmp_path))
            t0 = time.monotonic()
            asked[0] = True
    assert t0 is not None and seen_temp
    assert time.monotonic() - t0 < HANG
    assert isinstance(events[-1], Finished) and events[-1].cancelled
    assert os.listdir(tmp_path) == []
    assert _gone(runner.pid)


def test_a_child_that_does_not_stop_is_killed_on_cancel(tmp_path, monkeypatch):
    import imgtui.bench.runner as runner_mod

    monkeypatch.setattr(runner_mod, "GRACE", 0.0)  # no time to stop by itself: terminated at once
    runner = BenchRunner(_long_plan(tmp_path))
    asked = [False]
    events = []
    for ev in runner.events(lambda: asked[0]):
        events.append(ev)
        if _writing(ev):
            asked[0] = True
    assert isinstance(events[-1], Finished) and events[-1].cancelled
    assert os.listdir(tmp_path) == []  # the parent removed the killed child's stores
    assert _gone(runner.pid)


def test_a_killed_child_is_one_line_and_its_stores_are_removed(tmp_path):
    runner = BenchRunner(_long_plan(tmp_path))
    with pytest.raises(ChildDiedError) as err:
        for ev in runner.events():
            if _writing(ev):
                os.kill(runner.pid, signal.SIGKILL)
    msg = str(err.value)
    assert msg == "the benchmark process was killed by SIGKILL before it finished"
    assert "\n" not in msg
    assert os.listdir(tmp_path) == []


def test_a_bad_plan_fails_in_the_parent_and_a_bad_dataset_in_the_child_is_one_line(tmp_path):
    with pytest.raises(PlanError):
        BenchRunner(BenchPlan(backends=["nope"], workdir=str(tmp_path)))
    runner = BenchRunner(BenchPlan(dataset=str(tmp_path / "missing"), backends=["lmdb"], workdir=str(tmp_path)))
    with pytest.raises(ImgtuiError) as err:
        list(runner.events())
    assert "\n" not in str(err.value) and "missing" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_make_stores_in_a_child_process(tmp_path):
    dest = tmp_path / "s.lmdb"
    runner = StoresRunner("synthetic:count=30,size=8", [("lmdb", str(dest), {})], [10])
    events = list(runner.events())
    assert [e.kind for e in events][0] == "started" and events[-1].kind == "finished"
    assert events[-1].paths == (str(dest),) and events[-1].done == 10 and not events[-1].cancelled
    import imgtui

    with imgtui.open(dest) as r:
        assert len(r) == 10


def test_scratch_folders_of_killed_apps_are_removed_by_the_next_run(tmp_path):
    """An app killed with SIGKILL leaves its child's scratch folder (no cleanup ran): the next job
    started in the same folder removes it, and keeps those of apps still running."""
    import subprocess
    import sys

    from imgtui.bench.runner import OLD_SCRATCH_AGE, SCRATCH_PREFIX

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {
        "dead": tmp_path / f"{SCRATCH_PREFIX}{dead.pid}-k2j1",
        "alive": tmp_path / f"{SCRATCH_PREFIX}{os.getppid()}-a8x0",
        "old-name, old": tmp_path / f"{SCRATCH_PREFIX}q7w2e9",
        "old-name, new": tmp_path / f"{SCRATCH_PREFIX}z3x4c5",
        "not ours": tmp_path / "imgtui-children",
    }
    for f in folders.values():
        (f / "store.lmdb").mkdir(parents=True)
    past = time.time() - OLD_SCRATCH_AGE - 60
    os.utime(folders["old-name, old"], (past, past))
    plan = BenchPlan(dataset="synthetic:count=10,size=8", backends=["lmdb"], methods=["imgtui"],
                     experiments=["store_many"], counts=[10], repeats=1, workdir=str(tmp_path))
    runner = BenchRunner(plan)
    runner.start()
    left = set(os.listdir(tmp_path))
    for ev in runner.events():
        pass
    assert isinstance(ev, Finished)
    assert runner.scratch.name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-")
    assert runner.scratch.name in left
    assert {n for n in left if n != runner.scratch.name} == {
        folders[k].name for k in ("alive", "old-name, new", "not ours")}
