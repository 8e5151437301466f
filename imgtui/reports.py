"""What a write or change reports: typed dataclasses (attributes with types, for code and editors)
that also read as mappings (``report["count"]``, ``dict(report)``, JSON), as the API documented
them before they were typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator


class _Report(Mapping):
    """A dataclass readable as a read-only mapping of its fields."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, eq=False)
class ConvertReport(_Report):
    """``imgtui.convert``: ``count`` records written to ``path`` in ``seconds``."""

    count: int
    seconds: float
    path: str
    backend: str = ""
    bytes_on_disk: int | None = None


@dataclass(frozen=True, eq=False)
class ChangeReport(_Report):
    """``imgtui.append/overwrite/delete``: what the change did (``how``: in place or rewritten)."""

    operation: str
    backend: str
    path: str
    records: int
    count: int
    seconds: float
    in_place: bool
    how: str
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True, eq=False)
class RepairReport(_Report):
    """``imgtui.repair``: one line per action taken (none: there was nothing to do)."""

    path: str
    backend: str
    actions: list[str] = field(default_factory=list)
