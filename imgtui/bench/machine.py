"""What machine a benchmark ran on: CPU, RAM, OS, library versions, the workdir's filesystem."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


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
        import h5py

        info["h5py"] = h5py.version.version
        info["hdf5"] = h5py.version.hdf5_version
    except Exception:  # pragma: no cover
        info["h5py"] = None
    try:
        import lmdb

        info["lmdb"] = lmdb.__version__
        info["liblmdb"] = ".".join(map(str, lmdb.version()))
    except Exception:  # pragma: no cover
        info["lmdb"] = None
    info["pillow"] = _version("pillow")
    info["textual"] = _version("textual")  # read from metadata: the bench never imports textual
    info["rich"] = _version("rich")
    from .. import __version__

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
