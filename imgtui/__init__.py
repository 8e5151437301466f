"""imgtui: store image datasets on disk, in LMDB and in HDF5, and measure which suits your images."""

__version__ = "0.1.0"

from .errors import ImgtuiError  # noqa: E402
from .records import Record  # noqa: E402


def open(path, **kwargs):  # noqa: A001 - the public name the API promises
    """Open any imgtui store (disk, LMDB or HDF5, single or sharded) for reading."""
    from .backends import open_store

    return open_store(path, **kwargs)


def dataset(path, transform=None, with_label: bool = True):
    """A picklable map-style dataset over a store for training loops (PyTorch DataLoader workers).

    ``ds[i]`` is ``(image, label)``, or ``transform(record)``; see ``imgtui.loader.ImageDataset``.
    """
    from .loader import ImageDataset

    return ImageDataset(path, transform=transform, with_label=with_label)


def writer(path, backend: str, **kwargs):
    """A writer (context manager) for a new store of ``backend`` at ``path``."""
    from .backends import open_writer

    return open_writer(path, backend, **kwargs)


__all__ = ["ImgtuiError", "Record", "dataset", "open", "writer", "__version__"]
