"""Full garbage collections wait until the keys rest (imgtui.tui.idle_gc), and the interpreter gets
its settings back when the app ends."""

from __future__ import annotations

import gc

import pytest

from imgtui.tui.idle_gc import NO_AUTO_FULL, IdleGC


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def restore_gc():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()


def test_full_collections_run_when_input_rests_or_when_forced(restore_gc):
    clock, runs = Clock(), []
    g = IdleGC(idle=0.8, force_every=30.0, clock=clock, collect=lambda: runs.append(clock.t))
    before = gc.get_threshold()
    g.start()
    assert gc.get_threshold() == (before[0], before[1], NO_AUTO_FULL) and gc.get_freeze_count() > 0
    assert g.tick() is False  # nothing typed, not yet forced
    for _ in range(20):  # a held key: 20 presses 50 ms apart, a tick between each
        clock.t += 0.05
        g.input()
        assert g.tick() is False
    clock.t += 0.5
    assert g.tick() is False  # rested 0.5 s only
    clock.t += 0.4
    assert g.tick() is True and runs == [clock.t]  # rested 0.9 s: one full collection
    clock.t += 5
    assert g.tick() is False  # no input since: nothing to do
    clock.t += 30
    assert g.tick() is True and len(runs) == 2  # forced every 30 s, input or not
    # keys held for minutes still get collected every 30 s
    for _ in range(700):
        clock.t += 0.05
        g.input()
        g.tick()
    assert len(runs) == 3
    g.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert g.tick() is False  # stopped: never collects


async def test_the_app_defers_full_collections_and_gives_the_settings_back(restore_gc):
    from imgtui.tui.app import ImgtuiApp

    before = gc.get_threshold()
    app = ImgtuiApp("synthetic:count=10,size=8")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.idle_gc.active and gc.get_threshold()[2] == NO_AUTO_FULL
        await pilot.press("t")  # a key: the collector waits for the keys to rest
        assert app.idle_gc.dirty
    assert not app.idle_gc.active and gc.get_threshold() == before
