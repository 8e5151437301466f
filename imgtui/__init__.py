"""imgtui: store image datasets on disk, in LMDB and in HDF5, and measure which suits your images."""

__version__ = "0.1.0"

from .errors import ImgtuiError  # noqa: E402
from .records import Record  # noqa: E402


def open(path, **kwargs):  # noqa: A001 - the public name the API promises
    """Open any imgtui store (disk, LMDB or HDF5) for reading."""
    from .backends import open_store

    return open_store(path, **kwargs)


def writer(path, backend: str, **kwargs):
    """A writer (context manager) for a new store of ``backend`` at ``path``."""
    from .backends import open_writer

    return open_writer(path, backend, **kwargs)


__all__ = ["ImgtuiError", "Record", "open", "writer", "__version__"]
