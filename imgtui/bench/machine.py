"""What machine a benchmark ran on: CPU, RAM, OS, library versions, the workdir's filesystem."""

from __future__ import annotations

import os
import platform
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Any

from .._version import __version__
from ..backends import registry

#: what a library knows beyond its package version (the C library it wraps): module -> probe
_LIBRARY_DETAILS = {
    "h5py": lambda m: {"hdf5": m.version.hdf5_version},
    "lmdb": lambda m: {"liblmdb": ".".join(map(str, m.version()))},
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(path: str | os.PathLike) -> dict[str, str] | None:
    """Mount point, device and filesystem type holding ``path`` (from /proc/mounts), or None."""
    try:
        target = os.path.realpath(path)
        with open("/proc/mounts") as fh:
            mounts = [line.split() for line in fh if line.strip()]
    except OSError:
        return None
    best: list[str] | None = None
    for parts in mounts:
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if target == mnt or target.startswith(mnt.rstrip("/") + "/") or mnt == "/":
            if best is None or len(mnt) >= len(best[1]):
                best = [parts[0], mnt, parts[2]]
    if best is None:
        return None
    return {"device": best[0], "mount": best[1], "type": best[2]}


def backend_libraries() -> dict[str, str | None]:
    """Versions of the third-party packages the registered backends' modules import (``h5py``,
    ``lmdb``, ...), plus the C library each wraps where known (``hdf5``, ``liblmdb``)."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    try:
        dists = metadata.packages_distributions()
    except Exception:  # pragma: no cover
        dists = {}
    out: dict[str, str | None] = {}
    for name in registry.available():
        prefix = registry.get_backend(name).__module__
        mods = [m for k, m in list(sys.modules.items()) if k == prefix or k.startswith(prefix + ".")]
        for mod in mods:
            for value in list(vars(mod).values()):
                if not isinstance(value, types.ModuleType):
                    continue
                top = value.__name__.split(".")[0]
                if top in stdlib or top in ("imgtui", "numpy") or top.startswith("_"):
                    continue
                for dist in dists.get(top, [top]):
                    out.setdefault(dist, _version(dist))
                probe = _LIBRARY_DETAILS.get(top)
                if probe is not None:
                    try:
                        out.update(probe(sys.modules[top]))
                    except Exception:  # pragma: no cover
                        pass
    return dict(sorted(out.items()))


def machine_info(workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A JSON-able description of this machine and the libraries in use."""
    import numpy

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": numpy.__version__,
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import psutil

        info["ram_bytes"] = psutil.virtual_memory().total
        info["psutil"] = psutil.__version__
    except Exception:  # pragma: no cover
        pass
    try:
        info.update(backend_libraries())
    except Exception:  # pragma: no cover - the rest of the description still counts
        pass
    info["pillow"] = _version("pillow")
    info["textual"] = _version("textual")  # read from metadata: the bench never imports textual
    info["rich"] = _version("rich")
    info["imgtui"] = __version__
    wd = Path(workdir) if workdir is not None else None
    if wd is not None:
        info["workdir"] = str(wd)
        fs = filesystem_of(wd)
        if fs is not None:
            info["filesystem"] = fs["type"]
            info["mount"] = fs["mount"]
            info["device"] = fs["device"]
        try:
            st = os.statvfs(wd)
            info["workdir_free_bytes"] = st.f_bavail * st.f_frsize
        except OSError:
            pass
    return info


#: load per core above this at the start or the end of a run: the machine was busy
BUSY_LOAD_PER_CORE = 0.7


def load_now() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: busy: other processes used more than this share of the machine's CPU time during the run
BUSY_OTHERS_SHARE = 0.25


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall clock, CPU seconds the whole machine was busy, CPU seconds of this process and its
    reaped children): two snapshots say how much CPU *other* processes took meanwhile
    (``others_share``). None where psutil cannot say."""
    import time

    try:
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        busy = sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        own = sum(os.times()[:4])
    except Exception:
        return None
    return time.monotonic(), busy, own


def others_share(start: tuple[float, float, float] | None, end: tuple[float, float, float] | None) -> float | None:
    """The share (0..1) of the machine's CPU time that processes other than this run (and what
    it started) used between two ``cpu_snapshot`` s; steal time of a virtual machine counts as
    others. Unlike the load average, the run's own work does not make the machine look busy."""
    if start is None or end is None:
        return None
    wall = end[0] - start[0]
    if wall <= 0.5:  # too short to say
        return None
    others = max(0.0, (end[1] - start[1]) - (end[2] - start[2]))
    return round(min(1.0, others / (wall * cores())), 3)


def load_record(start: float | None, end: float | None, others: float | None = None) -> dict[str, Any]:
    """What a results table keeps of the machine's load: ``load_start``, ``load_end`` (1-minute
    load averages), ``load_cores``, ``others_cpu`` (the share of the CPU other processes used during
    the run, see ``others_share``) and ``busy``: other processes above BUSY_OTHERS_SHARE of the CPU
    meanwhile. The load averages do not decide when ``others`` is known: they trail a minute
    behind and count the run's own processes (at the end, and at the start of a run that follows
    another of the same command); without ``others``, load per core above BUSY_LOAD_PER_CORE at
    either end is busy."""
    n = cores()
    if others is not None:
        busy = others > BUSY_OTHERS_SHARE
    else:
        busy = any(v is not None and v / n > BUSY_LOAD_PER_CORE for v in (start, end))
    return {"load_start": start, "load_end": end, "load_cores": n, "others_cpu": others, "busy": busy}


def busy_warning(machine: dict[str, Any]) -> str | None:
    """One line when the machine was busy during the run, else None."""
    if not machine or not machine.get("busy"):
        return None
    n = machine.get("load_cores") or cores()
    start, end, others = machine.get("load_start"), machine.get("load_end"), machine.get("others_cpu")
    fmt = lambda v: "?" if v is None else f"{v:.2f}"  # noqa: E731
    cores_text = f"{n} core{'s' if n != 1 else ''}"
    if others is not None:
        what = f"other processes used {others:.0%} of its {cores_text} during the run, load {fmt(start)} at the start"
    else:
        what = f"load {fmt(start)} at the start, {fmt(end)} at the end, on {cores_text}"
    return (f"warning: the machine was busy ({what}): figures may be noisy; ranges that overlap are reported as "
            "too close to call")


def machine_id() -> str:
    """A short stable id of this machine for the results folder: /etc/machine-id (or the host
    name), the CPU model and the number of cores usable, hashed."""
    import hashlib

    ident = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            ident = Path(path).read_text().strip()
            if ident:
                break
        except OSError:
            pass
    if not ident:
        ident = platform.node()
    text = "|".join([ident, platform.machine(), cpu_model(), str(cores())])
    return hashlib.sha1(text.encode()).hexdigest()[:12]
