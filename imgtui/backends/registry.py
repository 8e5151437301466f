"""The one list of storage backends.

A backend is a package under ``imgtui/backends/`` whose ``Backend`` subclass declares its name,
options, capabilities, colour, writer, reader and mutator. Adding one is that package plus one
line here (and a subclass of the shared conformance suite in ``tests/backend_suite.py``); the CLI,
the app, bench, claims, recommend, plots and sharding read everything else from the class.

Backends that need an optional extra name it: asking for one whose package is not installed gives
a one-line error saying what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from ..errors import ImgtuiError

if TYPE_CHECKING:
    from .base import Backend

#: name -> (module, class, pip extra needed or ""[, store suffix]); an extra is also the name of the
#: package it installs, checked with ``find_spec`` (the backend's store module imports it when used). A backend with an extra names its
#: suffix here too: finding shards by name then does not import its package (zarr: ~0.3 s)
BACKENDS: dict[str, tuple[str, ...]] = {
    "disk": ("imgtui.backends.disk", "DiskBackend", ""),
    "lmdb": ("imgtui.backends.lmdb", "LmdbBackend", ""),
    "hdf5": ("imgtui.backends.hdf5", "Hdf5Backend", ""),
    "webdataset": ("imgtui.backends.webdataset", "WebDatasetBackend", ""),
    "zarr": ("imgtui.backends.zarr", "ZarrBackend", "zarr", ".zarr"),
}
ALIASES = {"h5": "hdf5", "png": "disk"}

#: the backends every install has, in display order
CORE = tuple(name for name, entry in BACKENDS.items() if not entry[2])


def suffix_of(name: str) -> str:
    """The store suffix of backend ``name``: from its registry line when it gives one (no import),
    else from its class."""
    entry = BACKENDS[canonical(name)]
    return entry[3] if len(entry) > 3 else get_backend(name).suffix


def canonical(name: str) -> str:
    key = str(name).lower().strip()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise ImgtuiError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return key


def get_backend(name: str) -> type["Backend"]:
    """The Backend class called ``name`` (imported on first use)."""
    key = canonical(name)
    module, cls, extra = BACKENDS[key][:3]
    if extra and importlib.util.find_spec(extra) is None:  # the package its store module needs
        raise ImgtuiError(f"backend {key} needs an optional package: pip install 'imgtui[{extra}]' (no module named {extra!r})")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if extra:
            raise ImgtuiError(
                f"backend {key} needs an optional package: pip install 'imgtui[{extra}]' ({exc})"
            ) from None
        raise
    return getattr(mod, cls)


def available() -> list[str]:
    """Names of the backends that can be used here (their optional packages are installed)."""
    out = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except ImgtuiError:
            continue
        out.append(name)
    return out


def benchmark_defaults() -> list[str]:
    """The backends a benchmark measures when it names none (``Backend.benchmark_by_default``)."""
    return [name for name in available() if get_backend(name).benchmark_by_default]


def all_backends() -> list[type["Backend"]]:
    return [get_backend(n) for n in available()]
