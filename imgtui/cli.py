"""One parser tree for imgtui: the headless commands (``imgtui convert|append|info|verify|export|bench|...``)
and the app. Bare ``imgtui`` starts the app; ``imgtui STORE`` (or ``imgtui browse STORE``) opens the
record browser on a store; ``imgtui DATASET`` starts the app with that dataset selected. The app's own
options (``--dataset``, ``--output``, ``--workdir``, ``--light``) sit on the root command.

Every user error ends in one line on stderr (``imgtui: error: ...``) and a non-zero exit code;
set IMGTUI_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._version import __version__
from .backends.remote import is_url
from .bench import backend_info as bi
from .errors import one_line
from .records import shape_text

class UsageError(Exception):
    """Bad command-line usage: exit code 2."""


def _err(msg: str) -> None:
    print(f"imgtui: error: {msg}", file=sys.stderr)


def add_backend_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per backend option, generated from each backend's ``Backend.options``
    (``imgtui.bench.backend_info``): ``--png-level`` for every backend that declares png_level,
    ``--hdf5-level`` for one backend only."""
    bi.add_option_flags(p)


def backend_options_from_args(args: argparse.Namespace, backend: str | None = None) -> dict[str, dict[str, Any]]:
    """Options per backend from the flags. With ``backend`` given, a flag of another backend is an error."""
    try:
        return bi.options_from_args(args, backend)
    except bi.OptionValueError as exc:
        raise UsageError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    names = bi.names()
    kinds = bi.human_list(bi.get(b).display_name or b for b in names)
    p = argparse.ArgumentParser(
        prog="imgtui",
        usage="imgtui [OPTIONS] [TARGET]  |  imgtui COMMAND ...",
        epilog="TARGET: a store opens the record browser on it; a dataset (folder, CIFAR batch, .npz, "
        "synthetic:...) starts the app with it selected.",
        description=f"Store image datasets in {kinds} stores, and measure which suits your images. "
        "Without a command, starts the terminal app.",
    )
    p.add_argument("--version", action="version", version=f"imgtui {__version__}")
    app = p.add_argument_group("the terminal app (bare imgtui, imgtui TARGET, imgtui browse STORE)")
    app.add_argument("--dataset", "-d", dest="app_dataset", metavar="SPEC",
                     help="dataset spec or path to select at start (default: synthetic; or give it as TARGET)")
    app.add_argument("--output", "-o", dest="app_output", default=".", metavar="DIR",
                     help="folder for exported results (default: .)")
    app.add_argument("--workdir", dest="app_workdir", metavar="DIR",
                     help="folder for the temporary benchmark stores (default: the system's temp folder)")
    app.add_argument("--light", dest="app_light", action="store_true", help="start with the light theme")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    br = sub.add_parser("browse", help="open the terminal app's record browser on a store (as imgtui STORE does)")
    br.add_argument("store", help="an imgtui store (any backend, or a folder of shards)")

    c = sub.add_parser("convert", help="write a dataset (folder, CIFAR batches, .npz, synthetic, store) into a store")
    c.add_argument("source", help="dataset: a folder, CIFAR batch file(s), .npz/.npy, a store, or synthetic[:count=N,...]")
    folders = [b for b in names if not bi.single_file(b)]
    files = [b for b in names if bi.single_file(b)]
    where = "; ".join(part for part in (
        f"a folder for {'/'.join(folders)}" if folders else "", f"a file for {'/'.join(files)}" if files else "") if part)
    c.add_argument("dest", help=f"the new store ({where})")
    c.add_argument("--backend", "-b", required=True, choices=bi.registered())
    c.add_argument("--overwrite", action="store_true", help="replace DEST if it exists (the old store stays until the new one is complete)")
    c.add_argument("--on-error", choices=["stop", "skip"], default="stop", help="corrupt image files: stop (default) or skip with a warning")
    _add_folder_flags(c)
    c.add_argument("--limit", type=int, help="convert only the first N records")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_backend_option_flags(c)
    sh = c.add_argument_group("sharding and parallel writing (DEST becomes a folder of shards + manifest.json)")
    sh.add_argument("--shard-size", metavar="SIZE", help="raw pixel bytes per shard, e.g. 500MB, 1GB, 1GiB")
    sh.add_argument("--shards", type=int, metavar="N", help="N shards of equal record counts (needs a known dataset length)")
    sh.add_argument("--workers", type=int, metavar="K", help="write shards in K local processes (with --dask: LocalCluster workers, default one per CPU)")
    sh.add_argument("--resume", action="store_true", help="finish an interrupted sharded conversion, keeping shards that check out")
    sh.add_argument("--dask", action="store_true", help="write shards on a local Dask cluster (needs the imgtui[dask] extra)")
    sh.add_argument("--scheduler", metavar="ADDRESS", help="write shards on the Dask cluster at ADDRESS (e.g. tcp://host:8786)")

    a = sub.add_parser("append", help="append every record of a dataset to an existing store")
    a.add_argument("source", help="dataset: a folder, CIFAR batch file(s), .npz/.npy, a store, or synthetic[:count=N,...]")
    a.add_argument("store", help=f"the existing store ({bi.human_list((bi.short_name(b) for b in names), 'or')}) to append to")
    a.add_argument("--on-error", choices=["stop", "skip"], default="stop", help="corrupt image files: stop (default) or skip with a warning")
    _add_folder_flags(a)
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="count, shapes, dtypes, labels, size on disk and options of a store "
                       "(or, for a dataset such as an image folder, what convert would read and skip)")
    i.add_argument("store", help="a store, or a dataset (image folder, CIFAR batches, .npz, ...)")
    i.add_argument("--json", action="store_true", help="print JSON")

    v = sub.add_parser("verify", help="re-read every record and check its checksum (exit 0 ok, 1 not)")
    v.add_argument("store")
    v.add_argument("--quiet", "-q", action="store_true")

    rp = sub.add_parser("repair", help="finish or roll back an interrupted write or change, remove stale temporaries")
    rp.add_argument("store")

    e = sub.add_parser("export", help="write a store back out as PNG files + labels.csv")
    e.add_argument("store")
    e.add_argument("dest")
    e.add_argument("--overwrite", action="store_true", help="write into DEST if it exists and is empty")
    e.add_argument("--quiet", "-q", action="store_true")

    add_claims_parsers(sub)

    try:
        from .bench import cli_bench
    except ImportError:
        cli_bench = None
    if cli_bench is not None and hasattr(cli_bench, "add_parser"):
        cli_bench.add_parser(sub)
    return p


def _progress(quiet: bool, description: str):
    """A rich progress bar on stderr, or a no-op context."""
    from contextlib import nullcontext

    if quiet:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


class _InterruptFlag:
    """SIGINT sets a flag that long loops check between batches (a KeyboardInterrupt raised inside
    a library callback can be swallowed); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self._old = None

    def __enter__(self) -> "_InterruptFlag":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def __call__(self) -> bool:
        return self.set


def _add_folder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int, metavar="N", help="image folders: refuse (or with --on-error skip, skip) "
                   "images of more than N pixels, checked from the file header before decoding (default: "
                   "Pillow's limit, 89,478,485; 0 = no limit)")
    p.add_argument("--follow-symlinks", action="store_true", help="image folders: read image files linked from "
                   "outside the folder and enter symlinked folders (default: skip them and say which)")
    p.add_argument("--slices", action="store_true", help="NIfTI volumes (.nii, .nii.gz): one 2-D record per slice "
                   "(data[:, :, k]) instead of one 3-D record per volume; spacing and affine in the metadata either way")
    p.add_argument("--series", action="store_true", help="DICOM folders: one 3-D record per series (same "
                   "SeriesInstanceUID), slices in order of position, instead of one record per file")
    p.add_argument("--exif-rotate", action="store_true", help="image folders: apply the EXIF orientation (turn "
                   "photos upright; default: pixels as stored in the file, the summary says which)")


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_pixels": args.max_pixels, "follow_symlinks": args.follow_symlinks,
            "exif_rotate": getattr(args, "exif_rotate", False), "slices": getattr(args, "slices", False),
            "series": getattr(args, "series", False)}


class _Warnings:
    """A command's ``warn``: a skipped file is printed at once and counted; a notice about the whole
    source (``datasets.Notice``, e.g. symlinks not followed) is printed once, at the end."""

    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.notes: list[str] = []

    def __call__(self, msg: str) -> None:
        from .datasets import Notice

        if isinstance(msg, Notice):
            if str(msg) not in self.notes:
                self.notes.append(str(msg))
            return
        self.skipped.append(msg)
        print(f"imgtui: warning: {msg}", file=sys.stderr)

    def print_notes(self) -> None:
        for msg in self.notes:
            print(f"imgtui: warning: {msg}", file=sys.stderr)


def _print_skip_line(dataset: Any, warned: list[str] | None = None) -> None:
    """An image folder's one line counting and naming every file it did not import ("skipped 3
    files: 2 .txt, 1 unreadable: a/x.jpg"), on stderr after the result. ``warned``: the skip
    warnings of worker processes (sharded conversion), when ``dataset`` did not read the files."""
    if getattr(dataset, "kind", "") != "folder":
        return
    if warned is not None:
        from pathlib import Path

        from .datasets.folder import skip_line

        root = str(Path(dataset.root)) + os.sep
        bad = []
        for msg in warned:
            text = msg[len("skipped "):] if msg.startswith("skipped ") else msg
            path = text.split(": ", 1)[0]
            bad.append(path[len(root):].replace(os.sep, "/") if path.startswith(root) else path)
        line = skip_line(dataset.ignored, bad)
    else:
        line = dataset.skip_summary
    if line:
        print(f"imgtui: {line}", file=sys.stderr)


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import check_source_dest, convert
    from .errors import CancelledError
    from .datasets import open_dataset

    if is_url(args.dest):
        return _convert_to_url(args)
    options = backend_options_from_args(args, args.backend).get(args.backend, {})
    warn = _Warnings()
    skipped = warn.skipped

    check_source_dest(args.source, args.dest, overwrite=args.overwrite)  # before reading or touching anything
    sharding = ("shard_size", "shards", "workers", "resume", "dask", "scheduler")
    if any(getattr(args, f, None) is not None and getattr(args, f) is not False for f in sharding):
        code = _convert_sharded(args, options, warn, skipped)
        warn.print_notes()
        return code
    dataset = open_dataset(args.source, on_error=args.on_error, warn=warn, **_source_options(args))
    with _progress(args.quiet, f"convert -> {args.backend}") as prog:
        task = prog.add_task("convert", total=dataset.length) if prog else None

        def progress(done: int, total: int | None) -> None:
            if prog is not None:
                prog.update(task, completed=done, total=total)

        with _InterruptFlag() as interrupted:
            try:
                result = convert(
                    dataset, args.dest, args.backend, overwrite=args.overwrite, options=options,
                    progress=progress, limit=args.limit, cancel=interrupted,
                )
            except CancelledError:
                raise KeyboardInterrupt from None
    mb = result["bytes_on_disk"] / 1e6
    rate = result["count"] / result["seconds"] if result["seconds"] > 0 else float("inf")
    print(
        f"wrote {result['count']:,} records to {args.dest} ({args.backend}) in {result['seconds']:.2f} s "
        f"({rate:,.0f} records/s), {mb:,.1f} MB on disk"
        + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else "")
    )
    _print_skip_line(dataset)
    warn.print_notes()
    return 0


def cmd_append(args: argparse.Namespace) -> int:
    from .convert import check_source_dest
    from .backends.mutate import append
    from .datasets import open_dataset
    from .errors import CancelledError

    warn = _Warnings()
    skipped = warn.skipped

    check_source_dest(args.source, args.store, overwrite=True, verb="append")  # before reading the source
    dataset = open_dataset(args.source, on_error=args.on_error, warn=warn, **_source_options(args))
    check_source_dest(dataset, args.store, overwrite=True, verb="append")
    with _progress(args.quiet, "append") as prog:
        task = prog.add_task("append", total=dataset.length) if prog else None

        def progress(done: int, total: int | None) -> None:
            if prog is not None:
                prog.update(task, completed=done, total=total)

        with _InterruptFlag() as interrupted:
            try:
                r = append(args.store, dataset, progress=progress, cancel=interrupted)
            except CancelledError:
                raise KeyboardInterrupt from None
    rate = r["records"] / r["seconds"] if r["seconds"] > 0 else float("inf")
    print(
        f"{args.store} ({r['backend']}): {r['how']}; now {r['count']:,} records; {r['seconds']:.2f} s "
        f"({rate:,.0f} records/s); {r['bytes_before'] / 1e6:,.1f} -> {r['bytes_after'] / 1e6:,.1f} MB on disk"
        + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else "")
    )
    _print_skip_line(dataset)
    warn.print_notes()
    return 0


def _convert_to_url(args: argparse.Namespace) -> int:
    """``imgtui convert SRC URL``: build the store in the local staging folder, then upload it
    (the manifest last); ``--resume`` goes on from what is staged and uploaded already."""
    import shutil

    from .backends import open_store
    from .backends.remote import remote_exists, staging_path, upload

    url = args.dest
    if remote_exists(url) and not (args.overwrite or args.resume):
        raise UsageError(f"{url} exists; --overwrite replaces it, --resume finishes an interrupted upload")
    staging = staging_path(url)
    staging.parent.mkdir(parents=True, exist_ok=True)
    complete = False
    if args.resume and staging.exists():
        try:
            with open_store(staging) as r:
                complete = len(r) > 0
        except Exception:
            complete = False
    if not complete:
        local = argparse.Namespace(**vars(args))
        local.dest = str(staging)
        sharded = any(getattr(args, f, None) not in (None, False) for f in ("shard_size", "shards", "workers", "dask", "scheduler"))
        local.overwrite = not (args.resume and sharded and staging.exists())
        local.resume = bool(args.resume and sharded and staging.exists())
        code = cmd_convert(local)
        if code:
            return code
    result = upload(staging, url, resume=args.resume)
    skipped = f", {result['skipped']} already there" if result["skipped"] else ""
    print(f"uploaded {result['files']} file(s), {result['bytes'] / 1e6:,.1f} MB, to {url}{skipped}")
    shutil.rmtree(staging, ignore_errors=True) if staging.is_dir() else staging.unlink(missing_ok=True)
    return 0


def _convert_sharded(args: argparse.Namespace, options: dict, warn, skipped: list) -> int:
    from .convert.parallel import convert_sharded

    with _progress(args.quiet, f"convert -> sharded {args.backend}") as prog:
        task = prog.add_task("convert", total=None) if prog else None

        def progress(done: int, total: int | None) -> None:
            if prog is not None:
                prog.update(task, completed=done, total=total)

        result = convert_sharded(
            args.source, args.dest, args.backend, shards=args.shards, shard_size=args.shard_size,
            workers=(os.cpu_count() or 1) if args.workers is None and args.dask else (args.workers or 1), resume=args.resume, overwrite=args.overwrite, options=options,
            on_error=args.on_error, warn=warn, progress=progress, limit=args.limit,
            dask=args.dask, scheduler=args.scheduler, source_options=_source_options(args),
        )
    mb = result["bytes_on_disk"] / 1e6
    rate = result["count"] / result["seconds"] if result["seconds"] > 0 else float("inf")
    reused = f", {result['reused']} reused" if result["reused"] else ""
    print(
        f"wrote {result['count']:,} records to {args.dest} ({result['shards']} {args.backend} shards{reused}, "
        f"{result['workers']} worker(s)) in {result['seconds']:.2f} s ({rate:,.0f} records/s), {mb:,.1f} MB on disk"
        + (f"; skipped {len(skipped)} unreadable file(s)" if skipped else "")
    )
    try:
        from .datasets import open_dataset

        _print_skip_line(open_dataset(args.source, warn=lambda m: None, **_source_options(args)), list(skipped))
    except Exception:  # the line is a courtesy: the conversion itself is done
        pass
    return 0


def _format_article_info(info: dict) -> str:
    from .backends.article import article_text

    lines = [f"{info['path']}: {article_text(info['backend'])}, {info['count']:,} records, no checksums"]
    raw, disk = info.get("raw_bytes"), info.get("bytes_on_disk")
    if disk is not None:
        ratio = f" ({disk / raw:.2f}x the {raw:,} raw pixel bytes)" if raw else ""
        lines.append(f"  size on disk: {disk:,} bytes{ratio}")
    sampled = info.get("sampled")
    of = f" (sampled {sampled:,} of {info['count']:,} spread over the store)" if sampled and sampled < info["count"] else ""
    if info.get("shapes"):
        lines.append(f"  shapes{of}: " + ", ".join(f"{shape_text(k)} ({v:,})" for k, v in list(info["shapes"].items())[:5]))
    lines += _dtype_label_lines(info)
    lines.append("  read-only source: the pickles are read with imgtui's restricted unpickler (no code from the file runs)"
                 if info["backend"] == "article-lmdb" else "  read-only source")
    lines.append(f"  bring it in: imgtui convert {info['path']} NEW -b lmdb (or disk, hdf5, ...); "
                 "imgtui verify checks readability only")
    if info.get("recipe"):
        lines.append(f"  read without imgtui: {info['recipe']}")
    return "\n".join(lines)


def _dtype_label_lines(info: dict) -> list[str]:
    """The dtypes and labels lines of ``imgtui info`` (the 20 most common labels)."""
    lines = []
    if info.get("dtypes"):
        lines.append("  dtypes: " + ", ".join(f"{k} ({v:,})" for k, v in info["dtypes"].items()))
    if info.get("file_formats"):  # the disk backend: which dtypes are PNG files and which TIFF
        lines.append("  files: " + ", ".join(f"{k} as {v}" for k, v in info["file_formats"].items()))
    labels = info.get("labels") or {}
    if labels:
        top = ", ".join(f"{k}: {v:,}" for k, v in list(labels.items())[:20])
        more = f" and {len(labels) - 20} more" if len(labels) > 20 else ""
        lines.append(f"  labels ({len(labels)}): {top}{more}")
    return lines


def format_info(info: dict) -> str:
    if info.get("article"):
        return _format_article_info(info)
    kind = f"sharded {info['backend']} store ({info['shards']} shards)" if info.get("sharded") else f"{info['backend']} store"
    lines = [f"{info['path']}: {kind}, {info['count']:,} records"]
    raw, disk = info.get("raw_bytes"), info.get("bytes_on_disk")
    if disk is not None:
        ratio = f" ({disk / raw:.2f}x the {raw:,} raw pixel bytes)" if raw else ""
        lines.append(f"  size on disk: {disk:,} bytes{ratio}")
    shapes = info.get("shapes") or {}
    if shapes:
        top = ", ".join(f"{shape_text(k)} ({v:,})" for k, v in list(shapes.items())[:5])
        more = f" and {len(shapes) - 5} more" if len(shapes) > 5 else ""
        lines.append(f"  shapes: {top}{more}")
    lines += _dtype_label_lines(info)
    opts = info.get("options") or {}
    lines.append("  options: " + (", ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"))
    lines.append(f"  format version {info.get('format_version')}, written by imgtui {info.get('imgtui_version')} at {info.get('created')}")
    lines.append(f"  checksums: {info.get('checksum') or 'crc32'} per record, checked on every read")
    if info.get("recipe"):
        lines.append(f"  read without imgtui: {info['recipe']}")
    for note in info.get("leftovers") or []:
        lines.append(f"  interrupted: {note}")
    return "\n".join(lines)


def _dataset_info(path: str, store_error: Exception) -> dict:
    """``info`` of a path that is not a store but a dataset (an image folder, CIFAR batches, .npz,
    DICOM): its summary from records sampled over the whole set; the store error when it is not
    a dataset either."""
    from .backends import detect_backend
    from .datasets import open_dataset
    from .errors import ImgtuiError

    try:
        detect_backend(path)
        is_store = True  # a store, but a broken one: its own error
    except ImgtuiError:
        is_store = False
    if is_store:
        raise store_error
    try:
        ds = open_dataset(path, on_error="skip", warn=lambda msg: None)  # as convert reads it (a NIfTI volume: one record)
        summary = ds.summary()
    except ImgtuiError:
        raise store_error from None
    summary["kind"] = ds.kind
    summary["path"] = path
    return summary


def format_dataset_info(s: dict) -> str:
    count = s.get("count")
    lines = [f"{s['path']}: not a store: a dataset to convert: {s['source']}"]
    lines.append(f"  records: {count:,}" if isinstance(count, int) else "  records: not known without reading everything")
    lines.append(f"  summary from: {s.get('sample_note', '')}")
    shapes = s.get("shapes") or {}
    if shapes:
        lines.append("  shapes: " + ", ".join(f"{shape_text(k)} ({v:,})" for k, v in list(shapes.items())[:5])
                     + (f" and {len(shapes) - 5} more" if len(shapes) > 5 else ""))
    if s.get("dtypes"):
        lines.append("  dtypes: " + ", ".join(f"{k} ({v:,})" for k, v in s["dtypes"].items()))
    labels = s.get("labels") or {}
    if labels:
        top = ", ".join(f"{k}: {v:,}" for k, v in list(labels.items())[:20])
        lines.append(f"  labels ({len(labels)} distinct in the sample): {top}" + (" ..." if len(labels) > 20 else ""))
    if s.get("exif"):
        lines.append(f"  {s['exif']}")
    if s.get("skipped"):
        checked = " (images checked: the sampled ones; convert reads them all)" if s.get("spread") else ""
        lines.append(f"  {s['skipped']}{checked}")
    lines.append(f"  make a store: imgtui convert {s['path']} STORE -b lmdb (or disk, hdf5, ...)")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .backends import get_backend, open_store
    from .errors import ImgtuiError

    try:
        reader = open_store(args.store)
    except ImgtuiError as exc:
        summary = _dataset_info(args.store, exc)
        print(json.dumps(summary, indent=1, default=str) if args.json else format_dataset_info(summary))
        return 0
    with reader:
        info = reader.info()
        if "recipe" not in info:
            info["recipe"] = get_backend(reader.backend).recipe()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print(format_info(info))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .backends import open_store

    with open_store(args.store) as reader:
        n = len(reader)
        with _progress(args.quiet, "verify") as prog:
            task = prog.add_task("verify", total=n) if prog else None
            result = reader.verify(progress=(lambda d, t: prog.update(task, completed=d)) if prog else None)
    for problem in result.errors[:50]:
        print(f"  {problem}", file=sys.stderr)
    if len(result.errors) > 50:
        print(f"  ... and {len(result.errors) - 50} more problems", file=sys.stderr)
    print(f"{args.store}: {result.summary()}")
    for note in result.notes[1:]:
        print(f"  note: {note}")
    return 0 if result.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    from .backends.mutate import repair

    result = repair(args.store)
    if not result["actions"]:
        print(f"{args.store}: nothing to repair (no interrupted write or change)")
    for action in result["actions"]:
        print(f"{args.store}: {action}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .convert import export_png

    with _progress(args.quiet, "export") as prog:
        task = prog.add_task("export", total=None) if prog else None
        result = export_png(
            args.store, args.dest, overwrite=args.overwrite,
            progress=(lambda d, t: prog.update(task, completed=d, total=t)) if prog else None,
        )
    print(f"exported {result['count']:,} records to {args.dest} (PNG files + labels.csv) in {result['seconds']:.2f} s")
    return 0


# -- claims and recommend --------------------------------------------------------------------
def add_claims_parsers(sub) -> None:
    cl = sub.add_parser("claims", help="test the classic comparison's claims on your images (confirmed/refuted/depends)")
    cl.add_argument("--dataset", default="synthetic", metavar="SPEC", help="dataset spec (default: synthetic)")
    cl.add_argument("--count", type=int, default=2000, help="records to measure with (default 2,000)")
    cl.add_argument("--repeats", type=int, default=None,
                    help="rounds: every backend timed once per round, the order rotated each round (default 3)")
    cl.add_argument("--fresh", action="store_true", help="measure everything again (ignore the stored results)")
    cl.add_argument("--quick", action="store_true", help="at most 500 records and 2 rounds (wider ranges)")
    cl.add_argument("--scale-counts", metavar="LIST", default=None,
                    help="record counts of the scale claims (10, 11), e.g. 10k,100k,1m (default 10k,100k; "
                         "with --quick 1k,10k); a smaller dataset's records are repeated to reach them")
    cl.add_argument("--no-scale", action="store_true", help="leave out the scale claims' measurements")
    cl.add_argument("--results", metavar="FILE", help="evaluate an earlier claims run (JSON) instead of measuring")
    cl.add_argument("--save", metavar="FILE", help="write the measured rows as JSON")
    cl.add_argument("--workdir", metavar="DIR", help="folder for the temporary stores")
    cl.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    cl.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    r = sub.add_parser("recommend", help="which backend suits your images and your needs, with measured reasons")
    r.add_argument("--dataset", metavar="SPEC", help="dataset spec; missing measurements are run on it")
    r.add_argument("--access", choices=["sequential", "random", "single"], default="random", help="how records are read (default random)")
    r.add_argument("--changes", choices=["static", "growing", "changing"], default="static", help="does the dataset change (default static)")
    r.add_argument("--readers", choices=["one", "many"], default="one", help="one reader or many processes (default one)")
    r.add_argument("--people-open-files", action="store_true", help="people open the images with ordinary tools")
    r.add_argument("--single-file", action="store_true", help="the store must be one file")
    r.add_argument("--backends", metavar="LIST", help="comma list of the backends to choose from (default: all)")
    r.add_argument("--results", metavar="FILE", help="benchmark results (JSON or CSV) to decide on")
    r.add_argument("--count", type=int, default=2000, help="records for missing measurements (default 2,000)")
    r.add_argument("--repeats", type=int, default=None,
                   help="rounds: every backend timed once per round, the order rotated each round (default 3)")
    r.add_argument("--fresh", action="store_true", help="measure everything again (ignore the stored results)")
    r.add_argument("--quick", action="store_true", help="at most 500 records and 2 rounds (wider ranges)")
    r.add_argument("--workdir", metavar="DIR", help="folder for the temporary stores")
    r.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _load_results(path: str):
    from .bench.model import ResultTable
    from .errors import ImgtuiError

    try:
        return ResultTable.from_csv(path) if path.lower().endswith(".csv") else ResultTable.from_json(path)
    except FileNotFoundError:
        raise ImgtuiError(f"{path}: no such results file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ImgtuiError(f"{path}: not an imgtui results file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _event_printer(quiet: bool, stream=None):
    """Progress on stderr: one line rewritten in place on a terminal, one line per step when
    stderr is a pipe or a file (a log then reads step by step, not as one long line)."""
    from .bench.model import Started

    stream = stream or sys.stderr
    live = bool(getattr(stream, "isatty", lambda: False)())

    def show(ev) -> None:
        if quiet or not isinstance(ev, Started):
            return
        text = f"[{ev.step}/{ev.steps}] {ev.experiment} {ev.backend}/{ev.method} {ev.count:,}"
        if getattr(ev, "rounds", 1) > 1:
            text += f" round {ev.round + 1}/{ev.rounds}"
        if live:
            print("\r" + text.ljust(70), end="", file=stream, flush=True)
        else:
            print(text, file=stream, flush=True)

    show.live = live  # type: ignore[attr-defined]
    return show


def _check_repeats(args: argparse.Namespace) -> None:
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise UsageError(f"--workdir {args.workdir} is not an existing folder")


def _print_notes(notes: list[str], quiet: bool) -> None:
    """Warnings (a busy machine) on stderr, one line each; the other notes go with the output."""
    for n in notes:
        if n.startswith("warning:"):
            print(f"imgtui: {n}", file=sys.stderr)


def _scale_counts(args: argparse.Namespace) -> list[int] | None:
    """``--scale-counts`` as record counts (None: the default; [] with ``--no-scale``)."""
    from .bench.cli_bench import BenchUsageError, _int

    if args.no_scale:
        if args.scale_counts is not None:
            raise UsageError("--no-scale and --scale-counts cannot go together")
        return []
    if args.scale_counts is None:
        return None
    try:
        counts = [_int(c, "--scale-counts") for c in str(args.scale_counts).split(",") if c.strip()]
    except BenchUsageError as exc:
        raise UsageError(str(exc)) from None
    if not counts:
        raise UsageError("--scale-counts is empty (give record counts like 10k,100k,1m)")
    return sorted(set(counts))


def cmd_claims(args: argparse.Namespace) -> int:
    from .bench.claims import evaluate_claims, format_claims, run_claims
    from .bench.memory import results_dir
    from .bench.stats import interval_note

    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    _check_repeats(args)
    scale = _scale_counts(args)
    if args.results:
        table = _load_results(args.results)
    else:
        printer = _event_printer(args.quiet or args.json)
        table = run_claims(args.dataset, args.count, workdir=args.workdir, repeats=args.repeats, on_event=printer,
                           results_folder=results_dir(), fresh=args.fresh, quick=args.quick, scale_counts=scale)
        if not (args.quiet or args.json) and printer.live:
            print(file=sys.stderr)
        _print_notes(table.notes, args.quiet)
    if args.save:
        table.to_json(args.save)
    verdicts = evaluate_claims(table)
    intervals = interval_note(table.rows)
    if args.json:
        print(json.dumps({"dataset": table.dataset, "notes": table.notes, "intervals": intervals,
                          "load": {k: table.machine.get(k) for k in ("load_start", "load_end", "load_cores", "others_cpu", "busy")},
                          "claims": [v.to_dict() for v in verdicts]}, indent=1))
    else:
        print(f"Claims tested on {table.dataset or args.dataset}")
        for n in table.notes:
            if not n.startswith("warning:"):
                print(n)
        if intervals:
            print(intervals)
        print()
        print(format_claims(verdicts), end="")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from .bench.recommend import Needs, Profile, candidates, recommend, recommend_for_dataset

    from .bench.memory import results_dir

    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    _check_repeats(args)
    needs = Needs(args.access, args.changes, args.readers, args.people_open_files, args.single_file)
    backends = candidates([b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None)
    results = _load_results(args.results) if args.results else None
    if args.dataset:
        printer = _event_printer(args.quiet or args.json)
        rec, _table = recommend_for_dataset(args.dataset, needs, results, count=args.count, workdir=args.workdir,
                                            on_event=printer, backends=backends, results_folder=results_dir(),
                                            fresh=args.fresh, quick=args.quick, repeats=args.repeats)
        if not (args.quiet or args.json) and rec.measured and printer.live:
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
        _print_notes(rec.notes, args.quiet)
    elif results is not None:
        rec = recommend(Profile.from_results(results), needs, results, backends)
    else:
        raise UsageError("give --dataset SPEC (measures what is needed) and/or --results FILE")
    if args.json:
        print(json.dumps(rec.to_dict(), indent=1, default=str))
    else:
        print(rec.format())
    return 0


COMMANDS = {"convert": cmd_convert, "append": cmd_append, "info": cmd_info, "verify": cmd_verify, "export": cmd_export,
            "repair": cmd_repair,
            "claims": cmd_claims, "recommend": cmd_recommend}


#: root options of the app that take a value (for finding TARGET among the arguments)
_APP_VALUE_OPTIONS = {"--dataset", "-d", "--output", "-o", "--workdir"}


def split_target(argv: list[str], commands: set[str]) -> tuple[list[str], str | None]:
    """``imgtui [OPTIONS] TARGET [OPTIONS]``: take out the first positional argument when it is not
    a command name (argparse cannot hold an optional positional beside sub-commands)."""
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--":
            rest = argv[i + 1:]
            return (argv[:i], rest[0]) if len(rest) == 1 else (argv, None)
        if token.startswith("-") and token != "-":
            skip = token in _APP_VALUE_OPTIONS
            continue
        if token in commands:
            return argv, None
        return argv[:i] + argv[i + 1:], token
    return argv, None


def _is_store(path: str) -> bool:
    """An imgtui store, or one written the classic article's way (the browser reads both)."""
    from .backends import article_kind, detect_backend

    try:
        detect_backend(path)
    except Exception:
        return article_kind(path) is not None
    return True


def _start_app(args: argparse.Namespace, target: str | None, commands: set[str]) -> int:
    """The app, with the root options; TARGET a store opens the browser on it, else selects it as the dataset."""
    dataset = args.app_dataset
    browse = getattr(args, "store", None) if args.command == "browse" else None
    if browse is not None and not _is_store(browse):
        if not os.path.exists(browse):
            raise UsageError(f"{browse}: no such file or folder")
        raise UsageError(f"{browse} is not an imgtui store; to look at a dataset, start imgtui {browse}")
    if target is not None:
        if dataset is not None:
            raise UsageError(f"give the dataset once: as TARGET ({target}) or with --dataset ({dataset})")
        if _is_store(target):
            browse = target
        elif not (os.path.exists(target) or target.split(":", 1)[0] in ("synthetic", "medical")):
            raise UsageError(f"{target}: no such file or folder, and not a command "
                             f"(commands: {', '.join(sorted(commands))})")
        dataset = target
    if browse is not None and dataset is None:
        dataset = browse
    try:
        from .tui.app import run_app
    except ImportError as exc:
        _err(f"the terminal app is not available ({one_line(exc)})")
        return 1
    return run_app(dataset=dataset or "synthetic", output=args.app_output, workdir=args.app_workdir,
                   light=args.app_light, browse=browse) or 0


def main(argv: list[str] | None = None) -> int:
    from .errors import ImgtuiError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    argv, target = split_target(argv, commands)
    args = parser.parse_args(argv)
    if args.command is None or args.command == "browse":
        try:
            return _start_app(args, target, commands)
        except UsageError as exc:
            _err(str(exc))
            return 2
    handler = COMMANDS.get(args.command)
    if handler is None and args.command == "bench":
        from .bench import cli_bench

        handler = cli_bench.run
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UsageError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; nothing half-written was left behind")
        return 130
    except BrokenPipeError:  # e.g. `imgtui info x | head`: the reader left, not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except ImgtuiError as exc:
        _err(one_line(exc))
        return 1
    except OSError as exc:
        _err(one_line(exc))
        return 1
    except Exception as exc:  # an unexpected error: still one line unless debugging
        if os.environ.get("IMGTUI_DEBUG"):
            raise
        _err(f"unexpected {one_line(exc)} (set IMGTUI_DEBUG=1 for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
