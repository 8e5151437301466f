"""Messages the workers post to the UI (``post_message`` is thread-safe); ``@on`` handlers apply them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message

from ..bench.model import ResultRow, ResultTable
from ..errors import one_line

#: the one-line text a notification shows for an error (the one ``imgtui.errors.one_line``)
one_line_error = one_line


@dataclass
class DatasetSummary(Message):
    """The dataset pane's worker finished reading a summary and a preview of ``spec``."""

    spec: str
    summary: dict[str, Any]
    preview: Text | None
    first_shape: str = ""


@dataclass
class BenchStarted(Message):
    """A benchmark step started."""

    experiment: str
    backend: str
    method: str
    count: int
    step: int
    steps: int


@dataclass
class BenchProgress(Message):
    """Records done in the current step (throttled to ~10 a second)."""

    done: int
    total: int
    step: int
    steps: int


@dataclass
class BenchResult(Message):
    """One finished row for the results table and the plots."""

    row: ResultRow


@dataclass
class BenchError(Message):
    """A backend/method failed in one step; the run goes on."""

    experiment: str
    backend: str
    method: str
    count: int
    message: str


@dataclass
class BenchFinished(Message):
    """The run ended (completed or cancelled)."""

    results: ResultTable
    cancelled: bool = False


@dataclass
class ExportDone(Message):
    """The export worker wrote these files."""

    paths: list[str]


@dataclass
class StoresStarted(Message):
    """Make stores began writing one backend's store (``index`` counts from 0)."""

    backend: str
    path: str
    index: int
    backends: int
    count: int | None
    note: str


@dataclass
class StoresProgress(Message):
    """Records written into the current store (throttled to ~10 a second)."""

    done: int
    total: int | None
    index: int
    backends: int


@dataclass
class StoresFinished(Message):
    """Make stores ended: ``paths`` are the complete stores (all of them unless cancelled)."""

    spec: str
    paths: list[str]
    count: int = 0
    cancelled: bool = False
