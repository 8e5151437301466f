"""The interval a figure is quoted with: a seeded bootstrap interval of the median where a row has
enough trials, else the min-max range of its trials.

``bootstrap_median_interval(times)`` resamples the trial times with replacement (``BOOT``
resamples, a fixed seed, so the same trials always give the same interval) and takes the
``LEVEL`` percentile interval of the resampled medians. Below ``MIN_BOOTSTRAP`` trials a
bootstrap says little (three trials have only a handful of distinct resamples), so the range
of the trials stands instead.

No UI code here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np

#: trials a row needs before its figure is quoted with a bootstrap interval (else min-max)
MIN_BOOTSTRAP = 5
#: resamples and the interval's level
BOOT, LEVEL = 2000, 0.95
SEED = 16


@lru_cache(maxsize=4096)
def _boot(times: tuple[float, ...], boot: int, level: float, seed: int) -> tuple[float, float]:
    a = np.asarray(times, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(a[rng.integers(0, len(a), (boot, len(a)))], axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_median_interval(times: Iterable[float], boot: int = BOOT, level: float = LEVEL,
                              seed: int = SEED) -> tuple[float, float]:
    """(low, high) of the ``level`` bootstrap percentile interval of the median of ``times``
    (seeded: deterministic)."""
    t = tuple(float(x) for x in times)
    if not t:
        raise ValueError("no trials")
    return _boot(t, int(boot), float(level), int(seed))


def interval(times: Iterable[float] | None, lo: float | None, hi: float | None) -> tuple[str, tuple[float, float] | None]:
    """("bootstrap", (low, high)) with at least ``MIN_BOOTSTRAP`` trial ``times``; else
    ("range", (lo, hi)) of the given min and max; ("", None) when neither is known."""
    t = [float(x) for x in (times or []) if x is not None]
    if len(t) >= MIN_BOOTSTRAP:
        return "bootstrap", bootstrap_median_interval(t)
    if lo is not None and hi is not None:
        return "range", (float(lo), float(hi))
    return "", None


def interval_note(rows) -> str | None:
    """One line saying what the bracketed figures are: bootstrap intervals, ranges, or both."""
    kinds: dict[str, set[int]] = {}
    for r in rows:
        if r.median_s is None or r.error is not None or not r.spread:
            continue
        kind = r.interval_kind()
        kinds.setdefault(kind, set()).add(len(r.times or []) or r.repeats)
    parts = []
    if "bootstrap" in kinds:
        parts.append(f"{LEVEL:.0%} bootstrap interval of the median ({BOOT:,} resamples, seed {SEED}) where a figure "
                     f"has {MIN_BOOTSTRAP} or more trials")
    if "range" in kinds:
        n = sorted(kinds["range"])
        parts.append(f"min-max range of the trials where it has fewer ({'/'.join(map(str, n))})"
                     if "bootstrap" in kinds else
                     f"min-max range of {'/'.join(map(str, n))} trials (a bootstrap interval needs {MIN_BOOTSTRAP} or more)")
    if not parts:
        return None
    return "figures in brackets: " + "; ".join(parts)
