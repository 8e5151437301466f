"""imgtui: store image datasets on disk, in LMDB and in HDF5, and measure which suits your images."""

from typing import Any

from ._version import __version__  # noqa: E402,F401

from .errors import ImgtuiError  # noqa: E402
from .records import Record  # noqa: E402
from .reports import ChangeReport, ConvertReport, RepairReport  # noqa: E402,F401


def open(path, **kwargs):  # noqa: A001 - the public name the API promises
    """Open any imgtui store (disk, LMDB or HDF5, single or sharded) for reading.

    ``verify=True`` (the default) checks every record read against its stored checksum."""
    from .backends import open_store

    return open_store(path, **kwargs)


def dataset(path, transform=None, with_label: bool = True, *, shuffle: bool | None = None, seed: int = 0,
            rank: int | None = None, world_size: int | None = None, **split: Any):
    """A picklable dataset over a store for training loops (PyTorch DataLoader workers).

    By default map-style: ``ds[i]`` is ``(image, label)``, or ``transform(record)``; see
    ``imgtui.loader.ImageDataset``. With ``shuffle=`` or ``rank=``/``world_size=`` (or under an
    initialised ``torch.distributed``, with ``shuffle=True``): an iterable dataset whose ranks and
    workers read disjoint parts covering every record once per epoch, ``set_epoch(e)``,
    ``state_dict()``/``load_state_dict()``; see ``imgtui.epochs.EpochDataset``.
    """
    if shuffle is not None or rank is not None or world_size is not None or split:
        from .epochs import EpochDataset

        return EpochDataset(path, transform, with_label, shuffle=bool(shuffle), seed=seed, rank=rank,
                            world_size=world_size, **split)
    from .loader import ImageDataset

    return ImageDataset(path, transform=transform, with_label=with_label)


def writer(path, backend: str, **kwargs):
    """A writer (context manager) for a new store of ``backend`` at ``path``."""
    from .backends import open_writer

    return open_writer(path, backend, **kwargs)


def append(store, records, **kwargs) -> ChangeReport:
    """Append records to an existing store; returns a report (see ``imgtui.backends.mutate``)."""
    from .backends.mutate import append as _append

    return _append(store, records, **kwargs)


def overwrite(store, changes) -> ChangeReport:
    """Replace records ``{index: record}`` of an existing store; returns a report."""
    from .backends.mutate import overwrite as _overwrite

    return _overwrite(store, changes)


def delete(store, indices) -> ChangeReport:
    """Delete records of an existing store (later records shift down); returns a report."""
    from .backends.mutate import delete as _delete

    return _delete(store, indices)


def repair(store) -> RepairReport:
    """Finish or roll back what an interrupted write or change left, remove stale temporaries;
    returns ``{"path", "backend", "actions"}`` (one line per action; empty: nothing to do)."""
    from .backends.mutate import repair as _repair

    return _repair(store)


__all__ = ["ImgtuiError", "Record", "append", "dataset", "delete", "open", "overwrite", "repair", "writer", "__version__"]
