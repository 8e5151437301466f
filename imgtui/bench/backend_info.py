"""What the CLI, bench and the app need to know about the backends, read from the registry.

Nothing here lists backends: names, labels, colours, suffixes, options and capabilities come from
the ``Backend`` classes named in ``imgtui.backends.registry.BACKENDS``, read when asked (so a
backend registered later, even at test time, shows up everywhere).

Option flags
------------
Every option a backend declares becomes command-line flags:

- ``Option.flag`` (``--png-level``): one flag per option *name*; it applies to each backend that
  declares that name (disk and LMDB both take ``--png-level``);
- ``--BACKEND-OPTION`` (``--hdf5-level``, ``--lmdb-encoding``): the same option for one backend only.

Values are checked against the ``Option`` (type, min/max, choices) with one-line errors.

An option whose help names another option's value as ``NAME=VALUE`` ("gzip level 0-9
(compression=gzip)", "PNG level when encoding=png") applies only when that option has that value:
the app disables its field otherwise, and a flag shared by several backends skips a backend where
it does not apply.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..backends import registry
from ..errors import ImgtuiError

if TYPE_CHECKING:
    from ..backends.base import Backend, Option


class OptionValueError(ImgtuiError):
    """A backend option flag with a bad value or given for the wrong backend (one line)."""


# -- names and looks ------------------------------------------------------------------------------
def benchmark_defaults() -> list[str]:
    """What a benchmark measures when it names no backends (``Backend.benchmark_by_default``)."""
    return registry.benchmark_defaults()


def names() -> list[str]:
    """The backends usable here (their optional packages are installed), in registry order."""
    return registry.available()


def registered() -> list[str]:
    """Every registered backend name (some may need an optional package)."""
    return list(registry.BACKENDS)


def get(name: str) -> type["Backend"]:
    """The Backend class ``name`` (aliases allowed); ImgtuiError (one line) for an unknown one."""
    return registry.get_backend(name)


def canonical(name: str) -> str:
    return registry.canonical(name)


def known(name: str) -> bool:
    try:
        registry.canonical(name)
    except ImgtuiError:
        return False
    return True


def _cls(name: str) -> type["Backend"] | None:
    try:
        return registry.get_backend(name)
    except (ImgtuiError, ImportError):
        return None


def short_name(name: str) -> str:
    """The name people read, without the explanation: "disk", "LMDB", "HDF5"."""
    cls = _cls(name)
    label = (cls.display_name if cls is not None else "") or name
    return label.split(" (")[0].strip() or name


def plain_name(name: str) -> str:
    """What the store is made of: "PNG files" for "disk (PNG files)", else the short name."""
    cls = _cls(name)
    label = (cls.display_name if cls is not None else "") or name
    m = re.search(r"\(([^)]+)\)\s*$", label)
    return m.group(1) if m else short_name(name)


def colour(name: str, default: str = "#555555") -> str:
    cls = _cls(name)
    return cls.colour if cls is not None and cls.colour else default


def store_suffix(name: str) -> str:
    """The suffix of a kept store's name: the backend's own (``.h5``, ``.lmdb``) or ``.NAME`` for
    folders without one (``.disk``), so stores of one dataset share a base name."""
    cls = _cls(name)
    return (cls.suffix if cls is not None and cls.suffix else "") or f".{name}"


def store_suffixes() -> set[str]:
    """Every suffix a store's name may end in (lower case)."""
    out = set()
    for n in names():
        out.add(store_suffix(n).lower())
        out.add(f".{n}".lower())
    return out


def human_list(items: Iterable[str], last: str = "and") -> str:
    """``["disk", "LMDB", "HDF5"]`` -> ``"disk, LMDB and HDF5"``."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def single_file(name: str) -> bool:
    cls = _cls(name)
    return bool(cls is not None and cls.capabilities.single_file)


# -- options ---------------------------------------------------------------------------------------
def option_words(opt: "Option") -> str:
    """``png_level`` -> ``png level`` (the app's field label)."""
    return opt.name.replace("_", " ")


def condition(cls: type["Backend"], opt: "Option") -> tuple[str, tuple] | None:
    """(other option, its values) when ``opt`` applies only while that option has one of them
    (``Option.requires``)."""
    return opt.requires


def applies(cls: type["Backend"], opt: "Option", options: dict[str, Any]) -> bool:
    """Does ``opt`` apply with the other options at ``options`` (missing ones at their default)?"""
    cond = condition(cls, opt)
    if cond is None:
        return True
    key, allowed = cond
    default = next((o.default for o in cls.options if o.name == key), None)
    return str(options.get(key, default)) in [str(v) for v in allowed]


def effective_default(cls: type["Backend"], opt: "Option") -> Any:
    """``opt.default``; for an option without one that applies under a condition, the value the
    writer fills in when the condition holds (hdf5 ``level`` with compression=gzip -> 4)."""
    if opt.default is not None:
        return opt.default
    cond = condition(cls, opt)
    if cond is None:
        return None
    return opt.implied  # declared with the option: no import of the writer (a test checks they agree)


def parse_value(opt: "Option", text: Any, flag: str) -> Any:
    """``text`` as a value of ``opt``; OptionValueError (one line, naming ``flag``) if it is not one."""
    if opt.type is bool:
        if isinstance(text, bool):
            return text
        t = str(text).strip().lower()
        if t in ("1", "yes", "true", "on"):
            return True
        if t in ("0", "no", "false", "off"):
            return False
        raise OptionValueError(f"{flag}: {text!r} is not yes or no")
    if opt.type is int:
        t = str(text).strip().replace("_", "")
        try:
            value = int(t)
        except ValueError:
            raise OptionValueError(f"{flag}: {text!r} is not a whole number") from None
        lo, hi = opt.min, opt.max
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                raise OptionValueError(f"{flag}: {text!r} must be from {lo:,} to {hi:,}")
            if lo is not None:
                raise OptionValueError(f"{flag}: {text!r} must be at least {lo:,}")
            raise OptionValueError(f"{flag}: {text!r} must be at most {hi:,}")
        if opt.choices and value not in opt.choices:
            raise OptionValueError(f"{flag}: {text!r} is not one of {', '.join(map(str, opt.choices))}")
        return value
    value = str(text).strip()
    if opt.choices:
        match = [c for c in opt.choices if str(c).lower() == value.lower()]
        if not match:
            raise OptionValueError(f"{flag}: {text!r} is not one of {', '.join(map(str, opt.choices))}")
        return match[0]
    return value


@dataclass(frozen=True)
class OptionFlag:
    """One command-line flag for backend options."""

    flag: str                                  # "--png-level"
    dest: str                                  # the argparse destination
    targets: tuple[tuple[str, "Option"], ...]  # (backend, option) pairs it sets
    shared: bool                               # the plain Option.flag (else --BACKEND-OPTION)

    @property
    def backends(self) -> list[str]:
        return [b for b, _o in self.targets]


def option_flags(backends: Iterable[str] | None = None) -> list[OptionFlag]:
    """The option flags of ``backends`` (default: every usable backend): the plain ``Option.flag``
    per option name (applies to each backend declaring it), then ``--BACKEND-OPTION`` per option."""
    order = list(backends) if backends is not None else names()
    plain: dict[str, list[tuple[str, Option]]] = {}
    single: list[OptionFlag] = []
    for b in order:
        cls = _cls(b)
        if cls is None:
            continue
        for opt in cls.options:
            plain.setdefault(opt.name, []).append((b, opt))
            single.append(OptionFlag(f"--{b}-{opt.name.replace('_', '-')}", f"backend_opt__{b}__{opt.name}",
                                     ((b, opt),), False))
    shared = [OptionFlag(targets[0][1].flag, f"backend_opt__{name}", tuple(targets), True)
              for name, targets in plain.items()]
    return shared + single


def _metavar(opt: "Option") -> str:
    if opt.choices:
        return "{" + ",".join(map(str, opt.choices)) + "}"
    if opt.type is int:
        if opt.min is not None and opt.max is not None and opt.max - opt.min <= 99:
            return f"{opt.min}-{opt.max}"
        return "N"
    if opt.type is bool:
        return "yes|no"
    return "TEXT"


def add_option_flags(parser: argparse.ArgumentParser, title: str = "backend options") -> list[OptionFlag]:
    """Add every backend option flag to ``parser`` (values are strings, checked later by
    ``options_from_args`` so that a bad value is a one-line error). The plain flags are listed in
    the help; ``--BACKEND-OPTION`` work too and are named in the group's description. A flag that
    would clash with one the command already has is left out. Returns the flags added."""
    flags = option_flags()
    singles = [f for f in flags if not f.shared]
    example = next((f.flag for f in singles if f.backends == singles[-1].backends), "--BACKEND-OPTION")
    group = parser.add_argument_group(
        title, f"Each option applies to the backends named in its help; as --BACKEND-OPTION (e.g. {example}) "
        "it applies to that backend only.",
    )
    added = []
    for f in flags:
        opt = f.targets[0][1]
        if f.shared:
            where = human_list(f.backends, "and")
            extra = f" (default {opt.default})" if opt.default is not None and len(f.targets) == 1 else ""
            help_ = f"{where}: {opt.help}{extra}".replace("%", "%%")
        else:
            help_ = argparse.SUPPRESS
        try:
            group.add_argument(f.flag, dest=f.dest, default=None, metavar=_metavar(opt), help=help_)
        except argparse.ArgumentError:
            continue
        added.append(f)
    parser.set_defaults(_backend_option_flags=added)
    return added


def options_from_args(args: argparse.Namespace, backend: str | None = None) -> dict[str, dict[str, Any]]:
    """Options per backend from the flags ``add_option_flags`` added.

    With ``backend`` (convert), every flag given must apply to it (else OptionValueError "FLAG
    applies to the X backend, not Y"). Without (bench), ``--BACKEND-OPTION`` sets that backend's
    option and a plain flag sets it for each backend declaring it where it applies (see
    ``applies``; when it applies to none, for all of them, so that the writer says why)."""
    flags: list[OptionFlag] = getattr(args, "_backend_option_flags", None) or []
    given = [(f, getattr(args, f.dest, None)) for f in flags]
    given = [(f, v) for f, v in given if v is not None]
    out: dict[str, dict[str, Any]] = {}
    if backend is not None:
        for f, text in given:
            targets = [(b, o) for b, o in f.targets if b == backend]
            if not targets:
                raise OptionValueError(f"{f.flag} applies to the {human_list(f.backends, 'or')} backend, not {backend}")
            b, opt = targets[0]
            out.setdefault(b, {})[opt.name] = parse_value(opt, text, f.flag)
        cls = get(backend) if backend in out else None
        for f, _text in given:
            b, opt = next((b, o) for b, o in f.targets if b == backend)
            if cls is not None and not applies(cls, opt, out.get(b, {})):
                key, allowed = opt.requires  # type: ignore[misc]
                others = [g for g in flags if any(t[0] == b and t[1].name == key for t in g.targets)]
                prefix = f"--{b}-"  # name the other flag the way this one was named
                other = next((g for g in others if g.flag.startswith(prefix) == f.flag.startswith(prefix)), others[0])
                raise OptionValueError(f"{f.flag} applies only with {other.flag} {' or '.join(map(str, allowed))}")
        return out
    singles = [(f, v) for f, v in given if not f.shared]
    for f, text in singles:
        b, opt = f.targets[0]
        out.setdefault(b, {})[opt.name] = parse_value(opt, text, f.flag)
    for f, text in (g for g in given if g[0].shared):
        targets = [(b, o) for b, o in f.targets if applies(get(b), o, out.get(b, {}))] or list(f.targets)
        for b, opt in targets:
            value = parse_value(opt, text, f.flag)
            out.setdefault(b, {}).setdefault(opt.name, value)
    return out
