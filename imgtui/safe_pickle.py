"""The one restricted unpickler imgtui uses for pickled files it did not write.

Two callers: CIFAR python batch files (``imgtui.datasets.cifar``) and the LMDB values written the
Real Python article's way (``imgtui.backends.article``). Both are untrusted input: a pickle is a
program, and a crafted one can run code or, with numpy's own reconstruction functions, build an
array whose dtype state says "no objects" over bytes that numpy later treats as object pointers
(a SIGSEGV). So this module never hands a numpy function, class or dtype to the file:

- ``find_class`` resolves only the names in ``ALLOWED_GLOBALS`` (plus, for the article reader,
  stand-in classes by name), and each resolves to a stand-in defined here, never to numpy's
  own object: ``numpy.dtype`` becomes a factory that accepts only the plain numeric dtypes of
  ``PLAIN_DTYPES`` and the exact state numpy writes for them (no fields, names, subarray,
  metadata or flags); ``_reconstruct`` / ``ndarray`` / ``_frombuffer`` become builders that
  check shape against the bytes actually present and make the array with ``np.frombuffer`` from
  a dtype taken from our own table. Every other global is refused with
  ``refusing to unpickle module.name``.
- Before unpickling, the opcode stream is scanned: persistent references (PERSID / BINPERSID)
  and out-of-band buffers are refused, declared lengths must fit in the data, memo indices must be
  plausible (the C unpickler would otherwise allocate a huge memo table), and the opcode count and
  total size are capped.
- After unpickling, the result is walked: it may only hold dict, list, tuple, str, bytes, int,
  float, bool, None, numpy arrays of plain dtypes (and the caller's stand-in objects); anything
  else (sets, bytearrays, half-built arrays, recursive structures, dict keys that are not plain
  scalars) is refused.

Every failure is one exception of the caller's class (``DatasetError`` unless told otherwise)
with a one-line message. Arrays built from a ``bytes`` payload are read-only views of it.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from typing import Any, Callable, Mapping

import numpy as np

from .errors import DatasetError

__all__ = [
    "ALLOWED_GLOBALS",
    "PLAIN_DTYPES",
    "SafeUnpickler",
    "StandIn",
    "safe_loads",
]

#: dtype strings numpy writes in a pickle (``dtype.__reduce__()[1][0]``) that may be built.
PLAIN_DTYPES: frozenset[str] = frozenset(
    {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"}
)

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: the biggest CIFAR file (CIFAR-100 train) is ~160 MB
DEFAULT_MAX_OPS = 5_000_000  # opcodes; a CIFAR-100 train batch needs ~300,000
_MAX_NDIM = 32
_MAX_DEPTH = 64  # nesting of containers in the result


class _Refused(Exception):
    """Internal: a refusal; the message is completed with the source and re-raised as ``error``."""


def _show(value: Any, limit: int = 60) -> str:
    """A short, single-line rendering of a name or value that came from the file."""
    if isinstance(value, str) and re.fullmatch(r"[\w.<>|=-]{1,100}", value):
        return value
    if isinstance(value, (str, bytes)):
        text = repr(value[:limit])
        return text + ("..." if len(value) > limit else "")
    return type(value).__name__


# ---------------------------------------------------------------------------------------------
# stand-ins: what the allowed globals resolve to
# ---------------------------------------------------------------------------------------------


class _Frozen:
    """Base of the stand-ins the file can reach: a BUILD opcode on them is refused (without a
    ``__setstate__`` the unpickler would write into their ``__dict__`` or set attributes)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"refusing to unpickle state for {self!r}")


class _Token(_Frozen):
    """A global that may only appear as an argument (``numpy.ndarray``, ``builtins.object``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return self.name


class _Func(_Frozen):
    """A callable global: calls our own checked function; its attributes cannot be changed."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.name


_NDARRAY = _Token("numpy.ndarray")
_OBJECT = _Token("builtins.object")


def _dtype_from_name(name: str, endian: str) -> np.dtype:
    dt = np.dtype(name)  # name is one of PLAIN_DTYPES (checked by the caller)
    if dt.itemsize > 1 and endian in "<>":
        dt = dt.newbyteorder(endian)
    return dt


class _DtypeSpec(_Frozen):
    """What ``numpy.dtype(name, align, copy)`` builds: a plain dtype from our table. BUILD accepts
    only the exact state numpy writes for such a dtype, once."""

    __slots__ = ("name", "dtype", "built")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", _dtype_from_name(name, "="))
        object.__setattr__(self, "built", False)

    def __repr__(self) -> str:
        return f"numpy dtype {self.name!r}"

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise _Refused(f"refusing to unpickle a second state for {self!r}")
        # numpy writes (3, endian, subarray, names, fields, elsize, alignment, flags) for every
        # plain dtype: elsize/alignment -1, flags 0, no subarray/names/fields (version 4 adds
        # metadata, which plain dtypes never have).
        if type(state) is not tuple or len(state) != 8 or _int(state[0]) != 3:
            raise _Refused(f"refusing to unpickle a dtype state for {self!r} that numpy does not write "
                           f"for a plain dtype")
        endian = _text(state[1])
        plain = state[2] is None and state[3] is None and state[4] is None
        plain = plain and _int(state[5]) == -1 and _int(state[6]) == -1 and _int(state[7]) == 0
        if not plain:
            raise _Refused(f"refusing to unpickle a dtype state with fields, subarray or flags for {self!r}")
        single = self.dtype.itemsize == 1
        if endian not in (("|",) if single else ("<", ">", "=")):
            raise _Refused(f"refusing to unpickle byte order {_show(endian)} for {self!r}")
        object.__setattr__(self, "dtype", _dtype_from_name(self.name, endian))
        object.__setattr__(self, "built", True)


def _int(value: Any) -> int | None:
    """An int from the file (bool counts: numpy pickles flags as True/False), else None."""
    return int(value) if type(value) in (int, bool) else None


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if type(value) is bytes:  # Python 2 pickles loaded with encoding="bytes"
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def _safe_dtype(obj: Any = None, align: Any = False, copy: Any = True) -> _DtypeSpec:
    name = _text(obj)
    if name is None or name not in PLAIN_DTYPES:
        shown = repr(name[:20]) if name is not None else _show(obj)
        raise _Refused(f"refusing to unpickle numpy dtype {shown} (only plain numeric dtypes: "
                       f"{', '.join(sorted(PLAIN_DTYPES))})")
    if _int(align) != 0 or _int(copy) != 1:
        raise _Refused(f"refusing to unpickle numpy dtype {name!r} with align/copy arguments numpy does not write")
    return _DtypeSpec(name)


def _check_dtype(dtype: Any) -> np.dtype:
    if type(dtype) is not _DtypeSpec:
        raise _Refused(f"refusing to unpickle an array whose dtype is a {_show(dtype)}, not a plain numpy dtype")
    return dtype.dtype


def _check_shape(shape: Any) -> tuple[int, ...]:
    if type(shape) is not tuple or len(shape) > _MAX_NDIM:
        raise _Refused(f"refusing to unpickle an array shape that is not a tuple of at most {_MAX_NDIM} sizes")
    dims = tuple(_int(d) for d in shape)
    if any(d is None or d < 0 or type(s) is bool for d, s in zip(dims, shape)):
        raise _Refused("refusing to unpickle an array shape that is not made of sizes >= 0")
    return dims  # type: ignore[return-value]


def _make_array(raw: Any, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    """The array of ``shape`` over ``raw``: the declared size must be exactly the bytes present."""
    if type(raw) not in (bytes, bytearray):
        raise _Refused(f"refusing to unpickle array data given as {_show(raw)} (only bytes)")
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes != len(raw):
        dims = "x".join(map(str, shape)) if len(shape) <= 8 else f"{len(shape)}-d"
        size = f"{nbytes:,} bytes" if nbytes < 10**24 else "over 10^24 bytes"
        raise _Refused(f"refusing to unpickle an array declared as {dims} {dtype.name} ({size}) "
                       f"over {len(raw):,} bytes of data")
    if dtype.kind == "b" and count and np.frombuffer(raw, np.uint8).max() > 1:
        raise _Refused("refusing to unpickle a bool array holding values other than 0 and 1")
    if count == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape, order=order)  # type: ignore[arg-type]


class _Array(_Frozen):
    """An array being unpickled; replaced by the real array once the whole pickle is loaded."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        object.__setattr__(self, "array", array)

    def __repr__(self) -> str:
        return "a numpy array"

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise _Refused("refusing to unpickle a second state for a numpy array")
        # ndarray state: (version, shape, dtype, is_fortran, rawdata) or the old 4-tuple
        if type(state) is tuple and len(state) == 5 and _int(state[0]) == 1:
            state = state[1:]
        if type(state) is not tuple or len(state) != 4:
            raise _Refused("refusing to unpickle a numpy array state that is not (shape, dtype, order, data)")
        shape, dtype, fortran, raw = state
        dims = _check_shape(shape)
        dt = _check_dtype(dtype)
        if _int(fortran) not in (0, 1):
            raise _Refused("refusing to unpickle a numpy array state whose order flag is not 0 or 1")
        object.__setattr__(self, "array", _make_array(raw, dt, dims, "F" if fortran else "C"))


def _safe_reconstruct(subtype: Any = None, shape: Any = None, dtype: Any = None) -> _Array:
    # numpy writes _reconstruct(ndarray, (0,), b'b') and then BUILDs the real state
    if subtype is not _NDARRAY or _check_shape(shape) != (0,) or _text(dtype) != "b":
        raise _Refused("refusing to unpickle numpy _reconstruct with arguments numpy does not write "
                       "(only a plain ndarray)")
    return _Array()


def _safe_frombuffer(buf: Any = None, dtype: Any = None, shape: Any = None, order: Any = None,
                     axis_order: Any = None) -> _Array:
    dims = _check_shape(shape)
    dt = _check_dtype(dtype)
    order = _text(order)
    if order in ("C", "F") and axis_order is None:
        return _Array(_make_array(buf, dt, dims, order))
    if order == "K" and type(axis_order) is tuple:
        perm = [_int(a) for a in axis_order]
        if sorted(p for p in perm if p is not None) == list(range(len(dims))) and len(perm) == len(dims):
            return _Array(_make_array(buf, dt, dims, "C").transpose(perm))
    raise _Refused("refusing to unpickle numpy _frombuffer with an order numpy does not write")


def _safe_scalar(dtype: Any = None, data: Any = None) -> int | float | bool:
    """``numpy.core.multiarray.scalar(dtype, bytes)`` (a pickled numpy scalar) as a Python value."""
    dt = _check_dtype(dtype)
    if type(data) is not bytes or len(data) != dt.itemsize:
        raise _Refused(f"refusing to unpickle a numpy {dt.name} scalar without exactly {dt.itemsize} bytes of data")
    return _make_array(data, dt, (1,), "C")[0].item()


def _safe_codecs_encode(text: Any = None, encoding: Any = None) -> bytes:
    # how Python 3 writes bytes in protocols 0-2: _codecs.encode(str, "latin1")
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise _Refused("refusing to unpickle _codecs.encode other than str -> latin1 (how pickle writes bytes)")
    return text.encode("latin1")


def _safe_bytes(*args: Any) -> bytes:
    # how Python 3 writes b"" in protocols 0-2: builtins.bytes()
    if args:
        raise _Refused("refusing to unpickle builtins.bytes with arguments (only bytes())")
    return b""


_RECONSTRUCT = _Func("numpy._reconstruct", _safe_reconstruct)
_FROMBUFFER = _Func("numpy._frombuffer", _safe_frombuffer)
_SCALAR = _Func("numpy.scalar", _safe_scalar)
_DTYPE = _Func("numpy.dtype", _safe_dtype)
_ENCODE = _Func("_codecs.encode", _safe_codecs_encode)
_BYTES = _Func("builtins.bytes", _safe_bytes)

#: (module, name) -> stand-in: every global any pickle may name (old and new numpy spellings).
_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,  # protocol 5 (numpy >= 1.16)
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("_codecs", "encode"): _ENCODE,
    ("builtins", "bytes"): _BYTES,
    ("__builtin__", "bytes"): _BYTES,
}

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_GLOBALS)


class StandIn:
    """Base for plain stand-in objects a caller lets a pickle build by class name (the article's
    ``CIFAR_Image``): BUILD may only set the attributes named in ``_fields``; the values are
    checked like everything else."""

    _fields: tuple[str, ...] = ()

    def __setstate__(self, state: Any) -> None:
        if type(state) is tuple and len(state) == 2 and state[1] is None:
            state = state[0]  # (dict, slotstate) with no slots
        if type(state) is not dict:
            raise _Refused(f"refusing to unpickle {type(self).__name__} state that is not a dict")
        for key, value in state.items():
            name = _text(key)
            if name not in self._fields:
                raise _Refused(f"refusing to unpickle attribute {_show(key)} of {type(self).__name__}")
            object.__setattr__(self, name, value)


def _reconstructor_for(classes: Mapping[str, type]) -> _Func:
    allowed = tuple(classes.values())

    def reconstructor(cls: Any = None, base: Any = None, state: Any = None) -> Any:
        # protocol 0/1: copyreg._reconstructor(cls, object, None) makes an empty instance
        if cls not in allowed or base is not _OBJECT or state is not None:
            raise _Refused("refusing to unpickle copyreg._reconstructor for anything but "
                           + " or ".join(sorted(classes)))
        return object.__new__(cls)

    return _Func("copyreg._reconstructor", reconstructor)


# ---------------------------------------------------------------------------------------------
# the opcode scan
# ---------------------------------------------------------------------------------------------

# opcode byte -> (name, argument length or pickletools' negative length code, argument name)
_OPCODES = {
    ord(op.code): (op.name, op.arg.n if op.arg is not None else 0, op.arg.name if op.arg is not None else "")
    for op in pickletools.opcodes
}
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


class _Unreadable(Exception):
    """Internal: the bytes are not a well-formed pickle."""


def _scan(data: bytes, max_ops: int) -> None:
    """Walk the opcodes without building anything: refuse persistent ids, out-of-band buffers and
    implausible memo indices; every declared length must fit in the data."""
    pos, end, ops = 0, len(data), 0
    while True:
        if pos >= end:
            raise _Unreadable("pickle data was truncated")
        code = data[pos]
        entry = _OPCODES.get(code)
        if entry is None:
            raise _Unreadable(f"invalid pickle opcode 0x{code:02x} at byte {pos}")
        name, n, argname = entry
        ops += 1
        if ops > max_ops:
            raise _Refused(f"refusing to unpickle more than {max_ops:,} opcodes")
        if name in ("PERSID", "BINPERSID"):
            raise _Refused(f"refusing to unpickle a persistent reference ({name} opcode)")
        if name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            raise _Refused(f"refusing to unpickle an out-of-band buffer ({name} opcode)")
        pos += 1
        arg_start = pos
        if n >= 0:
            pos += n
        elif n == pickletools.UP_TO_NEWLINE:
            lines = 2 if argname == "stringnl_noescape_pair" else 1
            for _ in range(lines):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    raise _Unreadable("pickle data was truncated")
                pos = nl + 1
        else:
            width, signed = _LENGTH_PREFIX[n]
            if pos + width > end:
                raise _Unreadable("pickle data was truncated")
            length = int.from_bytes(data[pos : pos + width], "little", signed=signed)
            if length < 0:
                raise _Unreadable(f"negative length in {name} at byte {arg_start - 1}")
            pos += width + length
        if pos > end:
            raise _Unreadable(f"{name} at byte {arg_start - 1} declares more data than the file holds")
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            raw = data[arg_start:pos]
            try:
                idx = int(raw) if name == "PUT" else int.from_bytes(raw, "little")
            except ValueError:
                raise _Unreadable(f"bad PUT index at byte {arg_start - 1}") from None
            if idx < 0 or idx > ops:  # picklers number memo entries 0, 1, 2, ...
                raise _Refused(f"refusing to unpickle memo index {idx:,} after {ops:,} opcodes")
        elif name == "FRAME" and int.from_bytes(data[arg_start:pos], "little") > end - pos:
            raise _Unreadable("pickle frame exceeds the data")
        if name == "STOP":
            return


# ---------------------------------------------------------------------------------------------
# the unpickler
# ---------------------------------------------------------------------------------------------

_SCALARS = (type(None), bool, int, float, str, bytes)


class SafeUnpickler(pickle.Unpickler):
    """Restricted unpickler: ``SafeUnpickler(file, source).load()``.

    ``source`` names the input in messages ("refusing to unpickle os.system from data_batch_1");
    ``error`` is the exception class raised (one line) for anything refused or unreadable;
    ``classes`` maps class names (any module) to ``StandIn`` subclasses the pickle may build;
    ``what`` names the input kind in "not a readable ..." messages. The whole remaining input is
    read (at most ``max_bytes``) and scanned before anything is built.
    """

    def __init__(self, file: Any, source: str | None = None, *, error: type[Exception] = DatasetError,
                 classes: Mapping[str, type] | None = None, what: str = "pickle",
                 max_bytes: int = DEFAULT_MAX_BYTES, max_ops: int = DEFAULT_MAX_OPS) -> None:
        data = file.read(max_bytes + 1)
        self._data = bytes(data) if not isinstance(data, bytes) else data
        super().__init__(io.BytesIO(self._data), encoding="bytes")
        self.source, self.error, self.what = source, error, what
        self.max_bytes, self.max_ops = max_bytes, max_ops
        self.classes: dict[str, type] = dict(classes or {})
        for cls in self.classes.values():
            if not (isinstance(cls, type) and issubclass(cls, StandIn)):
                raise TypeError("classes must map names to StandIn subclasses")
        self._globals = dict(_GLOBALS)
        if self.classes:
            rec = _reconstructor_for(self.classes)
            self._globals.update({("copyreg", "_reconstructor"): rec, ("copy_reg", "_reconstructor"): rec,
                                  ("builtins", "object"): _OBJECT, ("__builtin__", "object"): _OBJECT})

    @property
    def allowed_globals(self) -> frozenset[tuple[str, str]]:
        """Every (module, name) this unpickler resolves; ``("*", name)`` for a stand-in class."""
        return frozenset(self._globals) | {("*", name) for name in self.classes}

    def find_class(self, module: str, name: str) -> Any:
        found = self._globals.get((module, name))
        if found is None:
            found = self.classes.get(name)
        if found is None:
            raise _Refused(f"refusing to unpickle {_show(module)}.{_show(name)}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refusing to unpickle a persistent reference")

    def load(self) -> Any:
        src = f" from {self.source}" if self.source else ""
        prefix = f"{self.source}: " if self.source else ""
        try:
            if len(self._data) > self.max_bytes:
                raise _Refused(f"refusing to unpickle more than {self.max_bytes:,} bytes")
            _scan(self._data, self.max_ops)
            return self._finish(super().load())
        except _Refused as exc:
            raise self.error(f"{exc}{src}") from None
        except self.error:
            raise
        except RecursionError:
            raise self.error(f"{prefix}not a readable {self.what} (nested too deeply)") from None
        except MemoryError:
            raise self.error(f"{prefix}not a readable {self.what} (out of memory)") from None
        except Exception as exc:  # _Unreadable, UnpicklingError, EOFError, ValueError, TypeError, ...
            lines = str(exc).splitlines()
            reason = lines[0][:200] if lines else type(exc).__name__
            raise self.error(f"{prefix}not a readable {self.what} ({reason})") from None

    def _finish(self, root: Any) -> Any:
        """The loaded object with finished arrays in place of builders; refuse anything else."""
        stand_ins = tuple(self.classes.values())
        done: dict[int, Any] = {}
        active: set[int] = set()

        def fin(obj: Any, depth: int) -> Any:
            t = type(obj)
            if t in _SCALARS:
                return obj
            oid = id(obj)
            if oid in done:
                return done[oid]
            if oid in active:
                raise _Refused("refusing to unpickle a recursive structure")
            if depth > _MAX_DEPTH:
                raise _Refused(f"refusing to unpickle containers nested more than {_MAX_DEPTH} deep")
            active.add(oid)
            if t is _Array:
                if obj.array is None:
                    raise _Refused("refusing to unpickle a numpy array without its data")
                result = obj.array
            elif t is list:
                for i, v in enumerate(obj):
                    if type(v) not in _SCALARS:
                        obj[i] = fin(v, depth + 1)
                result = obj
            elif t is tuple:
                items = [fin(v, depth + 1) for v in obj]
                result = obj if all(a is b for a, b in zip(items, obj)) else tuple(items)
            elif t is dict:
                for k, v in list(obj.items()):
                    if type(k) not in _SCALARS:
                        raise _Refused(f"refusing to unpickle a dict key of type {type(k).__name__}")
                    if type(v) not in _SCALARS:
                        obj[k] = fin(v, depth + 1)
                result = obj
            elif t in stand_ins:
                for k, v in list(vars(obj).items()):
                    object.__setattr__(obj, k, fin(v, depth + 1))
                result = obj
            else:
                raise _Refused(f"refusing to unpickle {_describe(obj)} in the result")
            active.discard(oid)
            done[oid] = result
            return result

        return fin(root, 0)


def _describe(obj: Any) -> str:
    if isinstance(obj, _Frozen):
        return repr(obj)
    return f"a {type(obj).__name__}"


def safe_loads(data: bytes, source: str | None = None, *, error: type[Exception] = DatasetError,
               classes: Mapping[str, type] | None = None, what: str = "pickle",
               max_bytes: int = DEFAULT_MAX_BYTES, max_ops: int = DEFAULT_MAX_OPS) -> Any:
    """Unpickle ``data`` with ``SafeUnpickler``; ``error`` (one line) for anything refused or unreadable."""
    return SafeUnpickler(io.BytesIO(data), source, error=error, classes=classes, what=what,
                         max_bytes=max_bytes, max_ops=max_ops).load()
