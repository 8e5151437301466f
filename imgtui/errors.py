"""Errors imgtui raises. Each carries a one-line message meant for the user as is."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): how a library's error is quoted
    inside one of imgtui's one-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException | None) -> str:
    """The one line a user sees for ``exc`` (CLI stderr, app notifications, error rows).

    ImgtuiError messages are shown as they are (their first line); an OSError as
    ``FILE: reason``; anything else as ``TypeName: first line``. Whitespace runs become one space.
    """
    if exc is None:
        return "unknown error"
    text = str(exc).strip()
    first = " ".join(text.splitlines()[0].split()) if text else ""
    if isinstance(exc, ImgtuiError):
        return first or type(exc).__name__
    if isinstance(exc, OSError) and getattr(exc, "strerror", None):
        name = getattr(exc, "filename", None)
        return f"{name}: {exc.strerror}" if name else str(exc.strerror)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class ImgtuiError(Exception):
    """Base class: ``str(err)`` is a complete one-line explanation for the user."""


class InvalidRecordError(ImgtuiError, ValueError):
    """A record (image, label or metadata) that imgtui cannot store."""


class DatasetError(ImgtuiError):
    """A dataset source that cannot be read (missing path, no images, bad labels.csv, ...)."""


class StoreError(ImgtuiError):
    """Base for problems with a store on disk."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    pass


class StoreExistsError(StoreError, FileExistsError):
    pass


class IncompleteStoreError(StoreError):
    """The store was not finalised (its writer was interrupted or killed)."""


class WrongBackendError(StoreError):
    pass


class FormatVersionError(StoreError):
    """The store was written by a newer imgtui format than this version reads."""


class CorruptStoreError(StoreError):
    """The store's bytes do not match what its manifest or checksums say."""


class StoreChangedError(StoreError):
    """Another process changed the store after this reader opened it; reopen it."""


class StoreFullError(StoreError):
    """The disk (or a fixed-size map) is full; the write was rolled back."""


class CancelledError(ImgtuiError):
    """An operation was cancelled by the user."""
