"""What keeps a store safe while it is written or changed: one writer at a time, temporaries that
the next writer cleans up, and atomic switches.

One writer at a time
--------------------
Every writer and every change of a store at ``DIR/NAME`` holds an advisory lock on the file
``DIR/.NAME.imgtui-lock`` (``flock``, released by the kernel when the process dies, so a killed
writer never leaves a stale lock). A second writer fails at once with one line naming the process
that holds it. The lock file sits beside the store, not in it, so it also guards a path that does
not exist yet (two writers to one new path) and a single-file store that a change replaces.

Temporaries
-----------
Everything a writer builds beside a store is named ``NAME.imgtui-<what>-<pid>`` (``tmp``: a new
store being built; ``change``: a changed copy; ``rewrite``: a layout migration; ``old``: the store
being replaced). Only the lock holder creates them, so once a writer holds the lock every such name
left beside the store is stale (its writer was killed): ``clean_stale`` removes them.

Atomic switches
---------------
``replace_path(new, path)`` puts ``new`` in place of ``path`` in one step: ``os.replace`` for files,
``renameat2(RENAME_EXCHANGE)`` for folders on Linux (both paths swapped atomically, the old folder
is then removed). Where the exchange is unavailable the old folder is first renamed to
``NAME.imgtui-old-<pid>``; if the process dies between the two renames, ``recover_replaced``
(run by the next writer, ``open_store`` and ``imgtui repair``) puts it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from ..errors import StoreError

LOCK_SUFFIX = ".imgtui-lock"
_TEMP_RE = re.compile(r"^(?P<name>.+)\.imgtui-(?P<what>tmp|change|rewrite|old)-(?P<pid>\d+)$")


class StoreLockedError(StoreError):
    """Another process is writing or changing the store."""


def die_with_parent() -> None:
    """In a worker process: die with the process that started it. A writer killed with SIGKILL
    cannot shut its pool down, and a worker waiting for work would live for ever (Linux:
    PR_SET_PDEATHSIG, then a check that the parent did not die before it took effect)."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


# -- fault injection (tests) ---------------------------------------------------------------------
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A place where the fault-injection tests stop a write: ``IMGTUI_FAULT=kill:NAME[:K]`` kills
    the process (SIGKILL) the K-th time it passes point NAME, ``IMGTUI_FAULT=enospc:NAME[:K]``
    raises ENOSPC there. Points: ``batch`` (after each batch is written), ``commit`` (everything
    written, just before the switch), ``committed`` (just after it, before the cleanup)."""
    spec = os.environ.get("IMGTUI_FAULT")
    if not spec:
        return
    kind, _, rest = spec.partition(":")
    where, _, k = rest.partition(":")
    if where != name:
        return
    count = _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if count != int(k or 1):
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected)")


def lock_path(path: str | os.PathLike) -> Path:
    p = Path(os.path.abspath(path))
    return p.with_name(f".{p.name}{LOCK_SUFFIX}")


def temp_path(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    return p.with_name(f"{p.name}.imgtui-{what}-{os.getpid()}")


def _holder(lp: Path, patience: float = 0.0) -> str:
    """The holder's line of the lock file ``lp``. The holder writes it just after it took the lock:
    an empty file is read again for up to ``patience`` seconds (seen: two writers started together,
    the refused one named "another process" instead of the holder)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            text = lp.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return "another process"
        if text or time.monotonic() >= deadline:
            return text.splitlines()[0] if text else "another process"
        time.sleep(0.01)


#: descriptors of the locks this process holds: a forked child closes its copies at once (the lock
#: stays with the parent, which still holds the same open file), so a child that outlives a killed
#: parent (an encoder process) never keeps the store locked
_HELD: set[int] = set()


def _after_fork_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WriterLock:
    """The store's writer lock (see the module docstring). ``wait``: seconds to wait for it."""

    def __init__(self, path: str | os.PathLike, what: str = "write", wait: float = 0.0) -> None:
        self.path = Path(path)
        self.what = what
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        lp = lock_path(self.path)
        if not lp.parent.is_dir():
            return self  # the caller reports the missing folder
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise StoreError(f"cannot write {self.path}: {lp.parent} is not writable ({exc.strerror})") from None
            raise
        deadline = time.monotonic() + self.wait
        retries = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    who = _holder(lp, patience=0.5)
                    try:
                        gone = not os.path.samestat(os.fstat(fd), os.stat(lp))
                    except OSError:
                        gone = True
                    if (gone or who == "another process") and retries < 3:
                        # the holder finished between our try and now (it unlinks the file while
                        # it still holds it): the lock is free, try again at the path's file
                        # (seen: two appends started together, the second refused, naming
                        # "another process" that was already gone)
                        retries += 1
                        os.close(fd)
                        fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                        continue
                    os.close(fd)
                    raise StoreLockedError(
                        f"{self.path} is being written by {who}; wait for it to finish (one writer at a time)"
                    ) from None
                time.sleep(0.05)
                continue
            # the holder before us unlinks the file when it is done: make sure we locked the file
            # that is at the path now, not an unlinked one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lp))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
        try:  # who holds it, for the second writer's message (best effort: the disk may be full)
            os.ftruncate(fd, 0)
            os.write(fd, f"process {os.getpid()} ({self.what}: {cmd})\n".encode("utf-8", "replace"))
        except OSError:
            pass
        self._fd = fd
        self._pid = os.getpid()
        _HELD.add(fd)
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and getattr(self, "_pid", None) != os.getpid():
            return  # a copy in a forked child: the lock is the parent's (the child closed its fd)
        if fd is not None:
            _HELD.discard(fd)
            try:
                os.unlink(lock_path(self.path))  # while still holding it: no lock file is left behind
            except OSError:
                pass
            os.close(fd)  # closing the descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: str | os.PathLike) -> str | None:
    """Who holds the writer lock of ``path`` (one line), or None when nobody does."""
    lp = lock_path(path)
    try:
        fd = os.open(lp, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder(lp)
    finally:
        os.close(fd)
    return None


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries beside ``path`` whose names say they belong to it (``NAME.imgtui-*-PID``)."""
    p = Path(os.path.abspath(path))
    try:
        names = os.listdir(p.parent)
    except OSError:
        return []
    out = []
    for n in names:
        m = _TEMP_RE.match(n)
        if m and m.group("name") == p.name and m.group("what") != "old":
            out.append(p.parent / n)
    return sorted(out)


def remove_path(path: str | os.PathLike) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        try:
            p.unlink()
        except OSError:
            pass


def recover_replaced(path: str | os.PathLike) -> str | None:
    """Undo a replacement cut between its two renames: ``path`` is missing and
    ``NAME.imgtui-old-PID`` holds the old store. Returns what was done, or None."""
    p = Path(os.path.abspath(path))
    if p.exists() or p.is_symlink():
        return None
    try:
        olds = [n for n in os.listdir(p.parent) if (m := _TEMP_RE.match(n)) and m.group("name") == p.name
                and m.group("what") == "old"]
    except OSError:
        return None
    if not olds:
        return None
    old = p.parent / sorted(olds)[-1]
    os.rename(old, p)
    fsync_dir(p.parent)
    return f"put the old store back from {old.name} (a replacement was interrupted)"


def clean_stale(path: str | os.PathLike) -> list[str]:
    """Remove temporaries left beside ``path`` by killed writers (call while holding its lock).
    Returns the names removed."""
    done = []
    msg = recover_replaced(path)
    if msg:
        done.append(msg)
    p = Path(os.path.abspath(path))
    for t in stale_temporaries(p):
        remove_path(t)
        done.append(t.name)
    if p.exists():
        try:
            olds = [p.parent / n for n in os.listdir(p.parent)
                    if (m := _TEMP_RE.match(n)) and m.group("name") == p.name and m.group("what") == "old"]
        except OSError:
            olds = []
        for o in olds:  # the new store is in place: the old one was about to be removed
            remove_path(o)
            done.append(o.name)
    return done


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so a rename inside it survives a crash (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """Make every file and folder under ``path`` durable before it is switched into place: an fsync
    per file for a few files (an LMDB folder), one ``syncfs`` of the filesystem for many (a folder of
    PNG files: one call instead of one fsync per file)."""
    p = Path(path)
    if p.is_file():
        fsync_file(p)
        return
    files = []
    for root, _dirs, names in os.walk(p):
        files.extend(os.path.join(root, n) for n in names)
        if len(files) > 64:
            break
    fn = _libc_fn("syncfs") if len(files) > 64 else None
    if fn is not None:
        fd = os.open(p, os.O_RDONLY)
        try:
            if fn(fd) == 0:
                return
        finally:
            os.close(fd)
    for root, dirs, files in os.walk(p):
        for n in files:
            try:
                fsync_file(os.path.join(root, n))
            except OSError:
                pass
        fsync_dir(root)


_RENAME_EXCHANGE = 2
_libc = None


def _libc_fn(name: str):
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    if not _libc:
        return None
    return getattr(_libc, name, None)


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    fn = _libc_fn("renameat2")
    if fn is None:
        return False
    AT_FDCWD = -100
    r = fn(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if r == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_path(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put ``new`` in place of ``path`` atomically (see the module docstring); the old store is
    removed afterwards. ``path`` may not exist (then this is a plain rename)."""
    new, path = Path(new), Path(path)
    if not (path.exists() or path.is_symlink()):
        os.rename(new, path)
    elif new.is_dir() or path.is_dir():
        if path.is_dir() and not path.is_symlink() and exchange(new, path):
            fsync_dir(path.parent)
            remove_path(new)  # now holds the old store
            return
        old = temp_path(path, "old")
        os.rename(path, old)
        os.rename(new, path)
        fsync_dir(path.parent)
        remove_path(old)
        return
    else:
        os.replace(new, path)
    fsync_dir(path.parent)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file for a copy-on-write change: a reflink where the filesystem has them (instant,
    no extra space until blocks change), else the kernel's copy (copy_file_range / sendfile)."""
    FICLONE = 0x40049409
    with open(src, "rb") as fs, open(dst, "wb") as fd:
        try:
            fcntl.ioctl(fd.fileno(), FICLONE, fs.fileno())
            return
        except OSError:
            pass
        shutil.copyfileobj(fs, fd, 16 << 20) if not hasattr(os, "copy_file_range") else _copy_range(fs, fd)
        fd.flush()
        os.fsync(fd.fileno())


def _copy_range(fs, fd) -> None:
    size = os.fstat(fs.fileno()).st_size
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(fs.fileno(), fd.fileno(), min(1 << 30, size - done))
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                fs.seek(done)
                fd.seek(done)
                shutil.copyfileobj(fs, fd, 16 << 20)
                return
            raise
        if n == 0:
            break
        done += n
