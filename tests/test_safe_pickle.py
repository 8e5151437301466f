"""imgtui.safe_pickle: the one restricted unpickler for CIFAR batches and the article's LMDB values.

An exact allow-list, a crafted-pickle suite (code execution, persistent ids, numpy dtype-state
attacks, object arrays, huge declared sizes), property-based mutations of valid batches (loaded
in this process: a crash would kill the test run), and bit-exact round trips of real-format
batches through CifarDataset and the article LMDB reader.
"""

from __future__ import annotations

import builtins
import codecs
import copyreg
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imgtui.safe_pickle as sp
from imgtui.backends import article
from imgtui.backends.article import ArticleLmdbReader, _StandInCIFAR_Image, restricted_loads
from imgtui.datasets.cifar import CifarDataset
from imgtui.errors import CorruptStoreError, DatasetError
from imgtui.safe_pickle import ALLOWED_GLOBALS, PLAIN_DTYPES, SafeUnpickler, safe_loads

# -- hand-made pickles ------------------------------------------------------------------------


def S(s: str) -> bytes:  # str: SHORT_BINUNICODE / BINUNICODE
    b = s.encode()
    return (b"\x8c" + bytes([len(b)]) + b) if len(b) < 256 else (b"X" + struct.pack("<I", len(b)) + b)


def B(b: bytes) -> bytes:  # bytes: SHORT_BINBYTES / BINBYTES
    return (b"C" + bytes([len(b)]) + b) if len(b) < 256 else (b"B" + struct.pack("<I", len(b)) + b)


def I(n: int) -> bytes:  # noqa: E743 - int: BININT
    return b"J" + struct.pack("<i", n)


MARK, TUPLE, REDUCE, BUILD, STOP, NONE, TRUE, FALSE = b"(", b"t", b"R", b"b", b".", b"N", b"\x88", b"\x89"
P2, P4 = b"\x80\x02", b"\x80\x04"


def G(module: str, name: str) -> bytes:  # STACK_GLOBAL
    return S(module) + S(name) + b"\x93"


def GL(module: str, name: str) -> bytes:  # GLOBAL (protocols 0-3)
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + tup(*args) + REDUCE


def dstate(endian="|", names=NONE, fields=NONE, elsize=-1, align=-1, flags=0, version=3) -> bytes:
    """A numpy dtype state tuple as numpy writes it (defaults: a plain dtype)."""
    return tup(I(version), S(endian), NONE, names, fields, I(elsize), I(align), I(flags))


def dtype(name: str, state: bytes | None = None) -> bytes:
    if state is None:  # the state numpy writes: byte order "<" for multi-byte numbers, else "|"
        state = dstate("<" if name in ("i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8") else "|")
    return call(G("numpy", "dtype"), S(name), FALSE, TRUE) + state + BUILD


def array(dt: bytes, shape: tuple[int, ...], raw: bytes, module="numpy._core.multiarray") -> bytes:
    """An ndarray the way numpy pickles it with protocols 2-4: _reconstruct, then BUILD the state."""
    return (call(G(module, "_reconstruct"), G("numpy", "ndarray"), tup(I(0)), B(b"b"))
            + tup(I(1), tup(*[I(d) for d in shape]), dt, FALSE, B(raw)) + BUILD)


# dtype([('a', 'O')]) whose state says flags=0: numpy then treats 8 raw bytes as an object pointer
OBJECT_FIELD_FLAGS_CLEARED = dtype("V8", dstate("|", tup(S("a")), b"}" + S("a") + tup(dtype("O8", dstate("|", flags=63)), I(0))
                                                + b"s", 8, 1, 0))
DTYPE_STATE_ATTACK = P4 + array(OBJECT_FIELD_FLAGS_CLEARED, (1,), b"\x41" * 8) + STOP


def py2_str(b: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING / BINSTRING (bytes with encoding="bytes")
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def py2_batch(data: np.ndarray, labels: list[int], filenames: list[bytes], label_key=b"labels") -> bytes:
    """A CIFAR batch the way Python 2's cPickle (protocol 2) wrote the original files."""
    n = data.shape[0]
    arr = (GL("numpy.core.multiarray", "_reconstruct") + GL("numpy", "ndarray") + b"K\x00\x85" + py2_str(b"b")
           + b"\x87R" + b"(K\x01" + b"M" + struct.pack("<H", n) + b"M" + struct.pack("<H", 3072) + b"\x86"
           + GL("numpy", "dtype") + py2_str(b"u1") + b"K\x00K\x01\x87R"
           + b"(K\x03" + py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
           + b"\x89" + py2_str(data.tobytes()) + b"tb")
    lab = b"](" + b"".join(b"K" + bytes([x]) for x in labels) + b"e"
    names = b"](" + b"".join(py2_str(f) for f in filenames) + b"e"
    return (P2 + b"}(" + py2_str(b"batch_label") + py2_str(b"training batch 1 of 5") + py2_str(label_key) + lab
            + py2_str(b"data") + arr + py2_str(b"filenames") + names + b"u.")


def cifar_dict(n: int, seed: int, cifar100: bool = False, low: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    d = {
        b"batch_label": b"training batch 1 of 5",
        b"data": rng.integers(0, 128 if low else 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }
    if cifar100:
        d[b"fine_labels"] = [int(x) for x in rng.integers(0, 100, n)]
        d[b"coarse_labels"] = [int(x) for x in rng.integers(0, 20, n)]
    else:
        d[b"labels"] = [int(x) for x in rng.integers(0, 10, n)]
    return d


def batch_bytes(d: dict, protocol: str | int) -> bytes:
    if protocol == "py2":
        return py2_batch(d[b"data"], d[b"labels"], d[b"filenames"])
    return pickle.dumps(d, protocol=protocol)


# -- the allow-list ---------------------------------------------------------------------------

EXPECTED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("__builtin__", "bytes"),
}
ARTICLE_EXTRA = {
    ("copyreg", "_reconstructor"),
    ("copy_reg", "_reconstructor"),
    ("builtins", "object"),
    ("__builtin__", "object"),
    ("*", "CIFAR_Image"),
}


def _resolves(u: SafeUnpickler, module: str, name: str) -> bool:
    try:
        u.find_class(module, name)
    except Exception:
        return False
    return True


def test_allow_list_is_exact():
    import numpy._core.multiarray as multiarray
    import numpy._core.numeric as numeric
    import numpy.testing._private.utils as np_testing_utils

    assert ALLOWED_GLOBALS == EXPECTED_GLOBALS
    plain = SafeUnpickler(io.BytesIO(b""))
    art = SafeUnpickler(io.BytesIO(b""), classes={"CIFAR_Image": _StandInCIFAR_Image})
    assert plain.allowed_globals == EXPECTED_GLOBALS
    assert art.allowed_globals == EXPECTED_GLOBALS | ARTICLE_EXTRA
    # probe every name of every module a crafted pickle would reach for, under both spellings
    modules = {
        "numpy": np, "numpy._core.multiarray": multiarray, "numpy.core.multiarray": multiarray,
        "numpy._core.numeric": numeric, "numpy.core.numeric": numeric,
        "numpy.testing._private.utils": np_testing_utils, "numpy.lib.format": np.lib.format,
        "builtins": builtins, "__builtin__": builtins, "os": os, "posix": os, "subprocess": subprocess,
        "sys": sys, "codecs": codecs, "_codecs": codecs, "copyreg": copyreg, "copy_reg": copyreg,
        "pickle": pickle, "io": io, "imgtui.safe_pickle": sp, "imgtui.backends.article": article,
        "__main__": sys.modules["__main__"],
    }
    candidates = {(m, n) for m, mod in modules.items() for n in dir(mod)} | EXPECTED_GLOBALS
    assert len(candidates) > 2000
    assert {c for c in candidates if _resolves(plain, *c)} == EXPECTED_GLOBALS
    expected_art = EXPECTED_GLOBALS | (ARTICLE_EXTRA - {("*", "CIFAR_Image")})
    # ("*", "CIFAR_Image"): of the probed modules only the article's own has that name
    assert {c for c in candidates if _resolves(art, *c)} == expected_art | {("imgtui.backends.article", "CIFAR_Image")}
    # a CIFAR_Image from any module is the stand-in; nothing else by that trick
    assert art.find_class("__main__", "CIFAR_Image") is _StandInCIFAR_Image
    assert art.find_class("evil.module", "CIFAR_Image") is _StandInCIFAR_Image
    assert not _resolves(plain, "__main__", "CIFAR_Image")
    # every allowed name resolves to imgtui's own stand-in, never to numpy's or Python's object
    real = {np.dtype, np.ndarray, multiarray._reconstruct, numeric._frombuffer, multiarray.scalar,
            codecs.encode, bytes, object, copyreg._reconstructor}
    for key in expected_art:
        got = art.find_class(*key)
        assert got not in real and type(got).__module__ == "imgtui.safe_pickle", key


# -- crafted pickles --------------------------------------------------------------------------

SENTINEL = "pwned.txt"


def _refuse(payload: bytes, match: str, tmp_path: Path) -> str:
    """The payload is refused with ``match`` in one line by the plain loader, the CIFAR dataset and
    the article reader, and no sentinel file appears (no code ran)."""
    with pytest.raises(DatasetError) as e1:
        safe_loads(payload, "crafted")
    msg = str(e1.value)
    assert match in msg and "\n" not in msg and (msg.endswith(" from crafted") or msg.startswith("crafted: ")), msg
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(payload)
    with pytest.raises(DatasetError) as e2:
        CifarDataset(batch)
    assert match in str(e2.value) and str(batch) in str(e2.value) and "\n" not in str(e2.value)
    with pytest.raises(CorruptStoreError) as e3:
        restricted_loads(payload)
    assert match in str(e3.value) and "\n" not in str(e3.value)
    assert not (tmp_path / SENTINEL).exists()
    return msg


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _touch_cmd() -> bytes:
    return S(f"touch {SENTINEL}")


@pytest.mark.parametrize("payload,match", [
    (P2 + GL("os", "system") + tup(_touch_cmd()) + REDUCE + STOP, "refusing to unpickle os.system"),
    (P4 + call(G("posix", "system"), _touch_cmd()) + STOP, "refusing to unpickle posix.system"),
    (P4 + call(G("subprocess", "Popen"), tup(S("touch"), S(SENTINEL))) + STOP, "refusing to unpickle subprocess.Popen"),
    (P2 + GL("subprocess", "check_call") + tup(tup(S("touch"), S(SENTINEL))) + REDUCE + STOP,
     "refusing to unpickle subprocess.check_call"),
    (P4 + call(G("builtins", "eval"), S(f"open({SENTINEL!r}, 'w')")) + STOP, "refusing to unpickle builtins.eval"),
    (P2 + GL("__builtin__", "eval") + tup(S(f"open({SENTINEL!r}, 'w')")) + REDUCE + STOP,
     "refusing to unpickle __builtin__.eval"),
    (P4 + call(G("builtins", "exec"), S(f"open({SENTINEL!r}, 'w')")) + STOP, "refusing to unpickle builtins.exec"),
    # getattr on an allowed stand-in (to reach its function or globals) is not reachable
    (P4 + call(G("builtins", "getattr"), G("numpy", "dtype"), S("fn")) + STOP, "refusing to unpickle builtins.getattr"),
    (P2 + GL("__builtin__", "getattr") + tup(GL("numpy", "dtype"), S("fn")) + REDUCE + STOP,
     "refusing to unpickle __builtin__.getattr"),
    # numpy names outside the allow-list, including one that runs code
    (P4 + call(G("numpy.testing._private.utils", "runstring"), S(f"open({SENTINEL!r}, 'w')"), b"}") + STOP,
     "refusing to unpickle numpy.testing._private.utils.runstring"),
    (P4 + call(G("numpy", "load"), S(SENTINEL)) + STOP, "refusing to unpickle numpy.load"),
    (P4 + call(G("numpy", "frombuffer"), B(b"\x00" * 8), S("O")) + STOP, "refusing to unpickle numpy.frombuffer"),
    (P4 + call(G("numpy.core.multiarray", "fromstring"), B(b"")) + STOP,
     "refusing to unpickle numpy.core.multiarray.fromstring"),
    # codecs.encode is refused; _codecs.encode only does what pickle itself writes
    (P4 + call(G("codecs", "encode"), S("x"), S("rot13")) + STOP, "refusing to unpickle codecs.encode"),
    (P2 + GL("_codecs", "encode") + tup(S("eJzLSM3JyQcABiwCFQ=="), S("base64")) + REDUCE + STOP,
     "refusing to unpickle _codecs.encode other than str -> latin1"),
    (P4 + call(G("_codecs", "encode"), B(b"x"), S("latin1")) + STOP, "refusing to unpickle _codecs.encode"),
    (P4 + call(G("_codecs", "decode"), B(b"x"), S("zlib")) + STOP, "refusing to unpickle _codecs.decode"),
    (P2 + GL("__builtin__", "bytes") + tup(I(10 ** 9)) + REDUCE + STOP, "refusing to unpickle builtins.bytes with arguments"),
    (P4 + call(G("copyreg", "_reconstructor"), G("builtins", "bytes"), G("builtins", "object"), NONE) + STOP,
     "refusing to unpickle copyreg._reconstructor"),
    (P4 + G("pickle", "loads") + STOP, "refusing to unpickle pickle.loads"),
    # a name that is not an identifier is shown quoted, on one line
    (P4 + call(G("os\nx", "sys\ntem"), S("x")) + STOP, "refusing to unpickle 'os\\nx'.'sys\\ntem'"),
    # persistent ids (text and binary)
    (P2 + b"Pobj-1\n" + STOP, "refusing to unpickle a persistent reference (PERSID opcode)"),
    (P4 + S("obj-1") + b"Q" + STOP, "refusing to unpickle a persistent reference (BINPERSID opcode)"),
    (b"\x80\x05\x97" + STOP, "refusing to unpickle an out-of-band buffer (NEXT_BUFFER opcode)"),
])
def test_crafted_globals_and_opcodes_are_refused(in_tmp, payload, match):
    _refuse(payload, match, in_tmp)


def test_the_crafted_pickles_would_run_code_with_plain_pickle(in_tmp):
    """The suite is meaningful: the same bytes run code under pickle.loads."""
    pickle.loads(P2 + GL("os", "system") + tup(_touch_cmd()) + REDUCE + STOP)
    assert (in_tmp / SENTINEL).exists()
    os.remove(in_tmp / SENTINEL)
    pickle.loads(P4 + call(G("numpy.testing._private.utils", "runstring"), S(f"open({SENTINEL!r}, 'w').close()"),
                           b"}") + STOP)
    assert (in_tmp / SENTINEL).exists()


def test_dtype_state_attack_crashes_numpy_but_is_refused(in_tmp):
    """dtype([('a','O')]) with its state's flags cleared, over 8 raw bytes: numpy's own allow-listed
    objects build it and the process dies on SIGSEGV; imgtui refuses it and stays alive."""
    code = textwrap.dedent(f"""
        import pickle
        a = pickle.loads({DTYPE_STATE_ATTACK!r})
        print(a.dtype.hasobject, flush=True)
        repr(a)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False"  # numpy believed the object dtype holds no objects
    assert res.returncode != 0  # and died (SIGSEGV) using 0x4141... as a pointer
    _refuse(DTYPE_STATE_ATTACK, "refusing to unpickle numpy dtype 'V8'", in_tmp)


_U1 = "u1"
_FIELDS = b"}" + S("a") + tup(dtype("u1"), I(0)) + b"s"  # a plain inner dtype: only the outer state is wrong


@pytest.mark.parametrize("dt,match", [
    # a plain dtype whose crafted state adds fields, names, subarray, size, alignment or flags
    (dtype(_U1, dstate("|", tup(S("a")), _FIELDS, 8, 1, 0)), "refusing to unpickle a dtype state with fields"),
    (dtype(_U1, dstate("|", flags=63)), "refusing to unpickle a dtype state with fields, subarray or flags"),
    (dtype(_U1, dstate("|", elsize=8)), "refusing to unpickle a dtype state with fields"),
    (dtype(_U1, dstate("|", align=8)), "refusing to unpickle a dtype state with fields"),
    (dtype(_U1, tup(I(3), S("|"), tup(dtype("u1"), tup(I(8))), NONE, NONE, I(-1), I(-1), I(0))),
     "refusing to unpickle a dtype state with fields"),
    (dtype(_U1, dstate("|", version=4)), "that numpy does not write"),
    (dtype(_U1, tup(I(4), S("|"), NONE, NONE, NONE, I(-1), I(-1), I(0), b"}")), "that numpy does not write"),
    (dtype(_U1, dstate("|") + BUILD + dstate("|", flags=1)), "refusing to unpickle a second state"),
    (dtype("i8", dstate("|")), "refusing to unpickle byte order |"),
    (dtype(_U1, dstate("<")), "refusing to unpickle byte order <"),
    # dtypes outside the plain set
    (dtype("O8"), "refusing to unpickle numpy dtype 'O8'"),
    (dtype("V8"), "refusing to unpickle numpy dtype 'V8'"),
    (dtype("U3"), "refusing to unpickle numpy dtype 'U3'"),
    (dtype("M8"), "refusing to unpickle numpy dtype 'M8'"),
    (dtype("c16"), "refusing to unpickle numpy dtype 'c16'"),
    (call(G("numpy", "dtype"), S("u1"), TRUE, TRUE) + dstate() + BUILD, "with align/copy arguments"),
    (call(G("numpy", "dtype"), tup(tup(S("a"), S("O")))) + dstate() + BUILD, "refusing to unpickle numpy dtype tuple"),
])
def test_dtype_state_attacks_are_refused(in_tmp, dt, match):
    _refuse(P4 + array(dt, (1,), b"\x41" * 8) + STOP, match, in_tmp)


@pytest.mark.parametrize("payload,match", [
    # an object array as numpy pickles it (its data is a list of Python objects)
    (pickle.dumps(np.array([1, None], dtype=object), protocol=2), "refusing to unpickle numpy dtype 'O8'"),
    (pickle.dumps({b"data": np.array([b"x"], dtype=object), b"labels": [0]}, protocol=4), "numpy dtype 'O8'"),
    (pickle.dumps(np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), protocol=4), "refusing to unpickle numpy dtype 'V5'"),
    (pickle.dumps(np.array(["ab"]), protocol=5), "refusing to unpickle numpy dtype 'U2'"),
    (pickle.dumps(np.zeros(2, "M8[s]"), protocol=4), "refusing to unpickle numpy dtype 'M8'"),
    # huge declared shapes over little data, in every array constructor
    (P4 + array(dtype("u1"), (10 ** 9, 10 ** 9), b"\x00" * 8) + STOP,
     "refusing to unpickle an array declared as 1000000000x1000000000 uint8 (1,000,000,000,000,000,000 bytes) over 8"),
    (P4 + array(dtype("u1"), (2 ** 31 - 1,) * 32, b"") + STOP, "refusing to unpickle an array declared as 32-d"),
    (P4 + array(dtype("u1"), (2,), b"abc") + STOP, "refusing to unpickle an array declared as 2 uint8 (2 bytes) over 3 bytes"),
    (P4 + array(dtype("u1"), (1,) * 33, b"\x00") + STOP, "at most 32 sizes"),
    (P4 + array(dtype("u1"), (-1, 8), b"\x00" * 8) + STOP, "not made of sizes >= 0"),
    (P4 + call(G("numpy._core.numeric", "_frombuffer"), B(b"\x00" * 8), dtype("f8"), tup(I(2 ** 30), I(2 ** 30)), S("C"))
     + STOP, "refusing to unpickle an array declared as 1073741824x1073741824 float64"),
    (P4 + call(G("numpy._core.numeric", "_frombuffer"), B(b"\x00" * 8), dtype("u1"), tup(I(8)), S("K"), tup(I(1))) + STOP,
     "refusing to unpickle numpy _frombuffer with an order"),
    (P4 + call(G("numpy._core.multiarray", "_reconstruct"), G("numpy", "ndarray"), tup(I(10 ** 9)), B(b"b")) + STOP,
     "refusing to unpickle numpy _reconstruct with arguments"),
    (P4 + call(G("numpy._core.multiarray", "_reconstruct"), G("numpy", "dtype"), tup(I(0)), B(b"b")) + STOP,
     "refusing to unpickle numpy _reconstruct with arguments"),
    (P4 + call(G("numpy._core.multiarray", "_reconstruct"), G("numpy", "ndarray"), tup(I(0)), B(b"b")) + STOP,
     "refusing to unpickle a numpy array without its data"),
    (P4 + array(dtype("u1"), (2,), b"\x00\x01") + tup(I(1), tup(I(2)), dtype("u1"), FALSE, B(b"ab")) + BUILD + STOP,
     "refusing to unpickle a second state for a numpy array"),
    (P4 + array(dtype("b1"), (2,), b"\x00\x07") + STOP, "bool array holding values other than 0 and 1"),
    (P4 + call(G("numpy._core.multiarray", "scalar"), dtype("i8"), B(b"\x07")) + STOP, "without exactly 8 bytes"),
    (P4 + call(G("numpy._core.multiarray", "scalar"), dtype("O8")) + STOP, "numpy dtype 'O8'"),
    # declared lengths beyond the data, implausible memo indices, too much input
    (P4 + b"\x8e" + struct.pack("<Q", 2 ** 60) + b"abc" + STOP, "declares more data than the file holds"),
    (b"\x80\x05\x96" + struct.pack("<Q", 2 ** 33) + b"abc" + STOP, "declares more data than the file holds"),
    (P4 + NONE + b"r" + struct.pack("<I", 2 ** 31) + STOP, "refusing to unpickle memo index 2,147,483,648"),
    (P2 + NONE + b"p999999999\n" + STOP, "refusing to unpickle memo index 999,999,999"),
    # results that are not plain data
    (pickle.dumps({1, 2}, protocol=4), "refusing to unpickle a set in the result"),
    (pickle.dumps(frozenset({1}), protocol=4), "refusing to unpickle a frozenset"),
    (pickle.dumps(bytearray(b"ab"), protocol=5), "refusing to unpickle a bytearray"),
    (P4 + G("numpy", "dtype") + STOP, "refusing to unpickle numpy.dtype in the result"),
    (P4 + dtype("u1") + STOP, "refusing to unpickle numpy dtype 'u1' in the result"),
    (P4 + b"]\x94" + b"h\x00" + b"a" + STOP, "refusing to unpickle a recursive structure"),
    (P4 + b"]" * 100 + b"a" * 99 + STOP, "nested more than 64 deep"),
    (P4 + b"}" + tup(I(1)) + I(2) + b"s" + STOP, "refusing to unpickle a dict key of type tuple"),
    (P4 + b"}" + S("k") + I(1) + b"s" + b"}" + b"s" + STOP, "not a readable"),  # an unhashable key
    # BUILD on the stand-ins themselves (would change them for every later load)
    (P4 + G("numpy", "dtype") + b"}" + S("fn") + NONE + b"s" + BUILD + STOP, "refusing to unpickle state for numpy.dtype"),
    (P4 + G("numpy", "ndarray") + b"}" + BUILD + STOP, "refusing to unpickle state for numpy.ndarray"),
    (P4 + G("numpy", "dtype") + tup(NONE, b"}" + S("fn") + NONE + b"s") + BUILD + STOP, "refusing to unpickle state"),
    (P4 + G("numpy", "dtype") + tup() + b"\x81" + STOP, "not a readable"),  # NEWOBJ on a stand-in
])
def test_crafted_arrays_and_structures_are_refused(in_tmp, payload, match):
    _refuse(payload, match, in_tmp)
    # the stand-ins were not changed: a valid array still loads
    ok = safe_loads(pickle.dumps(np.arange(3, dtype=np.uint8), protocol=4))
    assert ok.tolist() == [0, 1, 2]


def test_garbage_and_truncation_are_one_line_errors(tmp_path):
    good = pickle.dumps(cifar_dict(1, 0), protocol=4)
    for payload in (b"", b"\x80", good[:-1], good[:50], b"\x80\x04\xff", b"\x80\x09N.", b"\x80\x02I9" * 5000):
        with pytest.raises(DatasetError) as e:
            safe_loads(payload, "x")
        assert str(e.value).startswith("x: not a readable pickle (") and "\n" not in str(e.value)


def test_size_and_opcode_caps():
    good = pickle.dumps(cifar_dict(1, 0), protocol=4)
    with pytest.raises(DatasetError, match=r"^refusing to unpickle more than 1,000 bytes from x$"):
        safe_loads(good, "x", max_bytes=1000)
    with pytest.raises(DatasetError, match=r"^refusing to unpickle more than 10 opcodes from x$"):
        safe_loads(good, "x", max_ops=10)
    assert safe_loads(good, "x")[b"labels"] == cifar_dict(1, 0)[b"labels"]


def test_article_stand_in_cannot_be_widened():
    cls = b"c__main__\nCIFAR_Image\n"
    # BUILD on the stand-in class itself, an unknown attribute, and a slot state are refused
    for payload in (P2 + cls + b"}" + S("get_image") + NONE + b"s" + BUILD + STOP,
                    P2 + cls + b")\x81" + b"}" + S("__class__") + NONE + b"s" + BUILD + STOP,
                    P2 + cls + b")\x81" + tup(NONE, b"}" + S("label") + I(1) + b"s") + BUILD + STOP):
        with pytest.raises(CorruptStoreError) as e:
            restricted_loads(payload)
        assert "\n" not in str(e.value)
    assert callable(_StandInCIFAR_Image.get_image) and _StandInCIFAR_Image._fields == ("channels", "size", "image", "label")
    # the CIFAR loader has no stand-in classes at all
    with pytest.raises(DatasetError, match=r"refusing to unpickle __main__\.CIFAR_Image"):
        safe_loads(P2 + cls + b")\x81" + STOP)


# -- what is built ----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_arrays_round_trip_in_every_protocol(protocol):
    rng = np.random.default_rng(protocol)
    arrays = [np.arange(3, dtype=np.uint8), np.zeros((0, 3072), np.uint8), np.array([True, False]),
              rng.standard_normal((3, 4)).astype(">f8").T, rng.integers(-9, 9, (2, 3, 4), np.int16).transpose(1, 0, 2),
              np.asfortranarray(rng.integers(0, 9, (3, 5), np.int64)), rng.random(5, np.float32)]
    arrays += [np.ones(2, np.dtype(name)) for name in sorted(PLAIN_DTYPES)]
    obj = {"arrays": arrays, "t": (1, 2.5, None, True, "s", b"b", b""), 3: [np.int64(7), np.float32(1.5), np.bool_(True)]}
    got = safe_loads(pickle.dumps(obj, protocol=protocol))
    for a, b in zip(got["arrays"], arrays, strict=True):
        assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert got["t"] == obj["t"]
    assert got[3] == [7, 1.5, True] and [type(x) for x in got[3]] == [int, float, bool]


def test_python2_batch_uses_old_numpy_names():
    d = cifar_dict(3, 1)
    raw = py2_batch(d[b"data"], d[b"labels"], d[b"filenames"])
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"U\x02u1" in raw
    got = safe_loads(raw)
    assert got[b"data"].dtype == np.uint8 and np.array_equal(got[b"data"], d[b"data"])
    assert got[b"labels"] == d[b"labels"] and got[b"filenames"] == d[b"filenames"]
    assert pickle.loads(raw, encoding="bytes")[b"labels"] == d[b"labels"]  # numpy agrees on the format


# -- the CIFAR structure --------------------------------------------------------------------

def _write(tmp_path: Path, d, name="data_batch_1", protocol=2) -> Path:
    p = tmp_path / name
    p.write_bytes(d if isinstance(d, bytes) else pickle.dumps(d, protocol=protocol))
    return p


def _with(**changes) -> dict:
    d = cifar_dict(2, 0)
    for k, v in changes.items():
        if v is KeyError:
            del d[k.encode()]
        else:
            d[k.encode()] = v
    return d


@pytest.mark.parametrize("d,match", [
    (_with(labels=[0, -1]), r"CIFAR labels\[1\] is -1, outside 0\.\.2147483647"),
    (_with(labels=[0, 2 ** 40]), r"CIFAR labels\[1\] is 1099511627776, outside"),
    (_with(labels=[0, 1.0]), r"CIFAR labels must be 2 integers, got a float at index 1"),
    (_with(labels=[0, True]), r"got a bool at index 1"),
    (_with(labels=[0, "1"]), r"got a str at index 1"),
    (_with(labels={0: 1, 1: 2}), r"CIFAR labels must be 2 integers, got a dict"),
    (_with(labels=np.zeros(2, np.float32)), r"CIFAR labels must be 2 integers, got a ndarray"),
    (_with(labels=[0, 1, 2]), r"CIFAR labels must be 2 integers, got 3 values"),
    (_with(coarse_labels=[0]), r"CIFAR coarse_labels must be 2 integers, got 1 values"),
    (_with(data=np.zeros((2, 3072), np.int8)), r"CIFAR 'data' must be N x 3072 uint8, got 2x3072 int8"),
    (_with(data=np.zeros((2, 32, 32, 3), np.uint8)), r"got 2x32x32x3 uint8"),
    (_with(data=b"\x00" * 3071), r"CIFAR 'data' must be N x 3072 uint8, got 3,071 bytes"),
    (_with(data=[1, 2]), r"not a CIFAR batch \(no 'data' array\)"),
    (_with(data=KeyError), r"not a CIFAR batch \(no 'data' array\)"),
    (_with(filenames=[b"a"]), r"1 filenames for 2 images"),
    (_with(filenames=[b"a", 3]), r"CIFAR filenames must be text"),
    (_with(filenames=b"ab"), r"CIFAR filenames must be a list of 2 names, got a bytes"),
    (_with(batch_label=[1]), r"CIFAR batch_label must be text, got a list"),
    ({**_with(), "labels": [1, 1]}, r"key 'labels' appears twice"),
    ({**_with(), 3: 1}, r"a key is a int, not text"),
    ({**_with(), b"\xff": 1}, r"a key is not ASCII text"),
    ([1, 2], r"not a CIFAR batch \(expected a dict, got list\)"),
])
def test_cifar_accepts_only_the_real_batch_structure(tmp_path, d, match):
    p = _write(tmp_path, d)
    with pytest.raises(DatasetError, match=match) as e:
        CifarDataset(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_cifar_labels_must_name_a_class_when_meta_names_them(tmp_path):
    d = _with(labels=[3, 9])
    _write(tmp_path, d)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c", b"d"]}, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_1: CIFAR labels\[1\] is 9, outside 0\.\.3$"):
        CifarDataset(tmp_path)
    # a meta file that is refused is ignored (no names), the batch still loads
    (tmp_path / "batches.meta").write_bytes(P2 + GL("os", "system") + tup(S("true")) + REDUCE + STOP)
    ds = CifarDataset(tmp_path)
    assert ds.label_names is None and [r.label for r in ds] == [3, 9]


def test_cifar_data_as_bytes_and_numpy_labels(tmp_path):
    d = cifar_dict(3, 4)
    d2 = {**d, b"data": d[b"data"].tobytes(), b"labels": np.array(d[b"labels"], np.int64)}
    recs = list(CifarDataset(_write(tmp_path, d2, protocol=4)))
    assert [r.label for r in recs] == d[b"labels"] and all(type(r.label) is int for r in recs)
    assert all(np.array_equal(r.image, d[b"data"][i].reshape(3, 32, 32).transpose(1, 2, 0)) for i, r in enumerate(recs))


# -- round trips of real-format batches -----------------------------------------------------

@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_real_format_batches_load_bit_exact(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {"data_batch_1": cifar_dict(5, 1), "data_batch_2": cifar_dict(3, 2), "test_batch": cifar_dict(4, 3)}
    for name, d in batches.items():
        (folder / name).write_bytes(batch_bytes(d, protocol))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    ds = CifarDataset(folder)
    assert len(ds) == 12 and ds.label_names == [n.decode() for n in names]
    recs = list(ds)
    expected = [(name, i) for name, d in batches.items() for i in range(d[b"data"].shape[0])]
    for r, (name, i) in zip(recs, expected, strict=True):
        d = batches[name]
        want = d[b"data"][i].reshape(3, 32, 32).transpose(1, 2, 0)
        assert r.image.dtype == np.uint8 and r.image.shape == (32, 32, 3) and r.image.tobytes() == want.tobytes()
        assert r.label == d[b"labels"][i] and type(r.label) is int
        assert r.metadata == {"filename": d[b"filenames"][i].decode(), "batch": name, "label_name": f"class{r.label}"}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_format_cifar100_loads_bit_exact(tmp_path, protocol):
    d = cifar_dict(6, 9, cifar100=True)
    (tmp_path / "train").write_bytes(pickle.dumps(d, protocol=protocol))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    (tmp_path / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    recs = list(CifarDataset(tmp_path / "train"))
    assert [r.label for r in recs] == d[b"fine_labels"]
    assert [r.metadata["coarse_label"] for r in recs] == d[b"coarse_labels"]
    assert b"".join(r.image.transpose(2, 0, 1).tobytes() for r in recs) == d[b"data"].tobytes()


def _article_store(path: Path, images: np.ndarray, labels: list, protocol: int) -> Path:
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (im, lab) in enumerate(zip(images, labels)):
            txn.put(f"{i:08}".encode("ascii"), pickle.dumps(article.CIFAR_Image(im, lab), protocol=protocol))
    env.close()
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_article_lmdb_values_load_bit_exact(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = [1, np.int64(2), np.uint8(3), 4, np.int32(5), 6]
    path = _article_store(tmp_path / f"p{protocol}_lmdb", images, labels, protocol)
    with ArticleLmdbReader(path) as r:
        recs = list(r)
    assert [x.label for x in recs] == [1, 2, 3, 4, 5, 6] and all(type(x.label) is int for x in recs)
    assert all(x.image.tobytes() == im.tobytes() and x.image.shape == (32, 32, 3) for x, im in zip(recs, images))
    # the article's own writer too
    written = article.store_many_lmdb(images, [int(x) for x in labels], tmp_path)
    with ArticleLmdbReader(written) as r:
        assert [x.image.tobytes() for x in r] == [im.tobytes() for im in images]


def test_article_reader_refuses_a_crafted_record(tmp_path):
    path = _article_store(tmp_path / "evil_lmdb", np.zeros((1, 32, 32, 3), np.uint8), [0], 4)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"00000001", DTYPE_STATE_ATTACK)
    env.close()
    with ArticleLmdbReader(path) as r:
        assert r[0].label == 0
        with pytest.raises(CorruptStoreError, match=r"evil_lmdb: record 1: refusing to unpickle numpy dtype 'V8'"):
            r[1]


# -- property-based: mutations of valid pickles --------------------------------------------

def _bases() -> list[tuple[str, bytes, int, int]]:
    """(name, valid batch pickle, start, end of its pixel bytes) for the real formats."""
    d = cifar_dict(1, 5, low=True)  # pixels < 128: the same bytes in every protocol's encoding
    out = []
    for proto in ("py2", 2, 4, 5):
        raw = batch_bytes(d, proto)
        start = raw.find(d[b"data"].tobytes())
        assert start > 0
        out.append((str(proto), raw, start, start + 3072))
    return out


BASES = _bases()
CIFAR100_BASE = pickle.dumps(cifar_dict(2, 6, cifar100=True, low=True), protocol=2)


def _position(draw, raw: bytes, start: int, end: int) -> int:
    # mostly the structure around the pixels (where mutations matter), sometimes anywhere
    structural = [i for i in range(len(raw)) if not start <= i < end]
    if draw(st.integers(0, 4)) == 0:
        return draw(st.integers(0, len(raw) - 1))
    return structural[draw(st.integers(0, len(structural) - 1))]


@st.composite
def mutated(draw):
    name, raw, start, end = draw(st.sampled_from(BASES))
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "dup"]))
        if not data:
            break
        pos = min(_position(draw, raw, start, end), len(data) - 1)
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "truncate":
            del data[pos:]
        else:  # repeat a slice of the stream (opcodes with their arguments)
            n = draw(st.integers(1, 16))
            data[pos:pos] = data[pos : pos + n]
    return name, bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _check_batch_or_error(folder: Path, payload: bytes) -> None:
    p = folder / "data_batch_1"
    p.write_bytes(payload)
    try:
        ds = CifarDataset(p)
        recs = list(ds)
    except DatasetError as exc:
        assert "\n" not in str(exc)
        return
    assert len(recs) == len(ds)
    for r in recs:
        assert type(r.image) is np.ndarray and r.image.dtype == np.uint8 and r.image.shape == (32, 32, 3)
        assert type(r.label) is int and 0 <= r.label < 2 ** 31
        assert set(r.metadata) <= {"filename", "batch", "coarse_label"} and isinstance(r.metadata.get("filename", ""), str)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_batches_load_or_raise_dataset_error(fuzz_dir, case):
    _check_batch_or_error(fuzz_dir, case[1])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, len(CIFAR100_BASE) - 1), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.integers(1, len(CIFAR100_BASE)))
def test_mutated_cifar100_batches_load_or_raise_dataset_error(fuzz_dir, flips, cut):
    data = bytearray(CIFAR100_BASE)
    for pos, x in flips:
        data[pos] ^= x
    _check_batch_or_error(fuzz_dir, bytes(data[:cut]))


# opcode soup: sequences of pieces that reach every stand-in with right and wrong arguments
_PIECES = [
    G("numpy._core.multiarray", "_reconstruct"), G("numpy.core.multiarray", "_reconstruct"), G("numpy", "ndarray"),
    G("numpy", "dtype"), G("numpy._core.numeric", "_frombuffer"), G("numpy._core.multiarray", "scalar"),
    G("_codecs", "encode"), G("builtins", "bytes"),
    S("u1"), S("i8"), S("f4"), S("b1"), S("V8"), S("O8"), S("|"), S("<"), S(">"), S("C"), S("F"), S("K"), S("latin1"),
    S("a"), B(b"b"), B(b"\x41" * 8), B(b"\x00\x01\x02"), B(b"\x01" * 3072), I(0), I(1), I(3), I(-1), I(8), I(63),
    I(3072), I(2 ** 31 - 1), NONE, TRUE, FALSE, MARK, MARK, TUPLE, b"\x85", b"\x86", b"\x87", b")", REDUCE, REDUCE,
    BUILD, BUILD, b"]", b"a", b"e", b"}", b"s", b"u", b"\x94", b"h\x00", b"h\x01", b"h\x02", b"2", b"0", b"1",
    b"\x81", b"\x8f", b"\x90", b"\x96" + struct.pack("<Q", 3) + b"abc",
    dtype("u1"), dtype("i8", dstate("<")), dstate(), dstate("|", flags=63), tup(I(1), tup(I(2)), dtype("u1"), FALSE, B(b"ab")),
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=30))
def test_opcode_soup_builds_only_plain_data(pieces):
    payload = P4 + b"".join(pieces) + STOP
    try:
        got = safe_loads(payload, "soup")
    except DatasetError as exc:
        assert "\n" not in str(exc)
        return
    _assert_plain(got)


def _assert_plain(obj, depth=0):
    assert depth < 70
    t = type(obj)
    if t in (type(None), bool, int, float, str, bytes):
        return
    if t is np.ndarray:
        assert obj.dtype.kind in "biuf" and not obj.dtype.hasobject and obj.dtype.fields is None
        assert obj.dtype.name in {np.dtype(n).name for n in PLAIN_DTYPES}
        return
    assert t in (list, tuple, dict), t
    items = list(obj.items()) if t is dict else list(enumerate(obj))
    for k, v in items:
        assert type(k) in (type(None), bool, int, float, str, bytes)
        _assert_plain(v, depth + 1)
