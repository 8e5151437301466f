"""Python's full garbage collections, moved to the moments the user is not pressing keys.

Measured in the browser on a 100,000-record store (tmux, 160x50, Down held at 30 presses a
second): a full (generation 2) collection took 60-145 ms with ~200,000 objects alive, and one
came every second or so while the screen was redrawn; each one is a frozen screen (the key ->
screen p99 was 200-300 ms, the longest pause 680 ms). ``IdleGC`` keeps the young collections as
they are (a few ms), stops the automatic full ones and runs them when no key or mouse event came
for ``IDLE`` seconds, or at the latest every ``FORCE_EVERY`` seconds (a key held for minutes still
gets its garbage collected). The objects alive at start (imported modules, the app's widgets) are
frozen (``gc.freeze``) so no full collection scans them again. ``stop`` gives the interpreter its
old settings back (the tests run many apps in one process).
"""

from __future__ import annotations

import gc
import time

#: seconds without input before a full collection runs
IDLE = 0.8
#: a full collection runs at least this often, input or not
FORCE_EVERY = 30.0
#: the third threshold while active: automatic full collections practically never
NO_AUTO_FULL = 1_000_000


class IdleGC:
    def __init__(self, idle: float = IDLE, force_every: float = FORCE_EVERY,
                 clock=time.monotonic, collect=gc.collect) -> None:
        self.idle = idle
        self.force_every = force_every
        self.clock = clock
        self.collect = collect
        self.last_input = clock()
        self.last_full = clock()
        self.dirty = False  # input came since the last full collection
        self._saved: tuple[int, ...] | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gc.collect()
        gc.freeze()
        t0, t1 = self._saved[:2]
        gc.set_threshold(t0, t1, NO_AUTO_FULL)
        self.last_full = self.clock()

    def stop(self) -> None:
        if self._saved is None:
            return
        gc.set_threshold(*self._saved)
        gc.unfreeze()
        self._saved = None

    def input(self) -> None:
        """A key or mouse event came: a full collection waits until input rests."""
        self.last_input = self.clock()
        self.dirty = True

    def tick(self) -> bool:
        """Call a few times a second: runs a full collection when input rested ``idle`` seconds
        (after some input since the last one) or ``force_every`` seconds passed. True if it ran."""
        if self._saved is None:
            return False
        now = self.clock()
        rested = self.dirty and now - self.last_input >= self.idle
        if rested or now - self.last_full >= self.force_every:
            self.collect()
            self.last_full, self.dirty = now, False
            return True
        return False
