"""The headless commands end to end: convert, info, verify, export, and their errors."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import imgtui
from imgtui.backends import open_store
from imgtui.cli import main
from imgtui.datasets import SyntheticDataset
from imgtui.errors import ImgtuiError

from backend_suite import make_image

BACKENDS = ["disk", "lmdb", "hdf5"]
SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-test"


def dest_for(tmp_path, backend, name="store"):
    return tmp_path / (f"{name}.h5" if backend == "hdf5" else f"{name}.{backend}")


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "imgtui", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_convert_info_verify_export_round_trip(tmp_path, backend, capsys):
    dest = dest_for(tmp_path, backend)
    spec = "synthetic:count=40,variable=8-24,channels=3,seed=5"
    assert main(["convert", spec, str(dest), "--backend", backend, "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote 40 records" in out

    assert main(["info", str(dest)]) == 0
    info_out = capsys.readouterr().out
    assert f"{backend} store, 40 records" in info_out
    assert "size on disk" in info_out

    assert main(["verify", str(dest), "-q"]) == 0
    assert "OK: 40 records verified" in capsys.readouterr().out

    expected = list(SyntheticDataset(count=40, variable=(8, 24), channels=3, seed=5))
    with imgtui.open(dest) as r:
        assert len(r) == 40
        assert all(a == b for a, b in zip(r, expected))

    out_dir = tmp_path / "exported"
    assert main(["export", str(dest), str(out_dir), "-q"]) == 0
    rows = list(csv.DictReader(open(out_dir / "labels.csv", encoding="utf-8")))
    assert len(rows) == 40
    from PIL import Image

    first = np.asarray(Image.open(out_dir / rows[0]["file"]))
    assert np.array_equal(first, expected[0].image)
    assert rows[0]["label"] == str(expected[0].label)


def test_convert_refuses_existing_dest_and_keeps_it(tmp_path, capsys):
    dest = dest_for(tmp_path, "hdf5")
    assert main(["convert", "synthetic:count=5", str(dest), "-b", "hdf5", "-q"]) == 0
    before = dest.read_bytes()
    assert main(["convert", "synthetic:count=9", str(dest), "-b", "hdf5", "-q"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert err.count("\n") == 1  # one line
    assert dest.read_bytes() == before
    assert main(["convert", "synthetic:count=9", str(dest), "-b", "hdf5", "-q", "--overwrite"]) == 0
    with imgtui.open(dest) as r:
        assert len(r) == 9


@pytest.mark.parametrize("args,message", [
    (["info", "/nonexistent/store"], "no such file or folder"),
    (["verify", "/nonexistent/store"], "no such file or folder"),
    (["convert", "/nonexistent/folder", "X", "-b", "disk"], "no such file or folder"),
    (["convert", "synthetic:count=x", "X", "-b", "disk"], "bad value"),
])
def test_bad_paths_give_one_line_errors(tmp_path, capsys, args, message):
    args = [a if a != "X" else str(tmp_path / "out") for a in args]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and err.startswith("imgtui: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_not_a_store(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    assert main(["info", str(tmp_path / "plain")]) == 1
    assert "is not an imgtui store" in capsys.readouterr().err


def test_option_of_another_backend_is_refused(tmp_path, capsys):
    code = main(["convert", "synthetic:count=3", str(tmp_path / "x"), "-b", "disk", "--hdf5-layout", "chunked"])
    assert code == 2
    assert "--hdf5-layout applies to the hdf5 backend, not disk" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_option_exits_2(tmp_path):
    res = run_cli("convert", "synthetic", tmp_path / "x", "-b", "disk", "--frobnicate")
    assert res.returncode == 2
    assert "unrecognized arguments: --frobnicate" in res.stderr
    assert "Traceback" not in res.stderr


def test_verify_fails_on_corrupted_store(tmp_path, capsys):
    import h5py

    dest = dest_for(tmp_path, "hdf5")
    assert main(["convert", "synthetic:count=20", str(dest), "-b", "hdf5", "-q"]) == 0
    with h5py.File(dest, "r+") as f:
        ds = f["images"]
        img = ds[7]
        img.flat[0] ^= 0xFF
        ds[7] = img
    assert main(["verify", str(dest), "-q"]) == 1
    out = capsys.readouterr()
    assert "FAILED" in out.out and "record 7" in out.err


def _default_sigint():
    # a shell that started us in the background may have set SIGINT to "ignore", which children inherit
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(pred, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_convert_leaves_nothing_at_dest_and_the_next_convert_cleans_up(tmp_path, backend):
    """SIGKILL in the middle of a write: nothing at DEST (the store is built beside it); the next
    convert to DEST removes the killed writer's temporary and writes a complete, valid store."""
    dest = dest_for(tmp_path, backend)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgtui", "convert", "synthetic:count=400000", str(dest), "-b", backend, "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    tmp_build = lambda: [p for p in tmp_path.iterdir() if ".imgtui-tmp-" in p.name]  # noqa: E731
    try:
        assert _wait_for(lambda: any(imgtui.backends.path_size(p) > 300_000 for p in tmp_build())), "convert never started writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not dest.exists()
    assert tmp_build()
    assert main(["convert", "synthetic:count=50", str(dest), "-b", backend, "-q"]) == 0
    assert not tmp_build()
    with open_store(dest) as reader:
        assert reader.verify().ok
        ds = SyntheticDataset(count=50)
        for i in (0, len(reader) - 1):
            assert reader[i] == ds.record(i)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_rolls_back_and_keeps_old_store(tmp_path, backend):
    dest = dest_for(tmp_path, backend)
    assert main(["convert", "synthetic:count=10,seed=1", str(dest), "-b", backend, "-q"]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgtui", "convert", "synthetic:count=400000", str(dest), "-b", backend, "-q", "--overwrite"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )
    tmp_build = lambda: [p for p in tmp_path.iterdir() if ".imgtui-tmp-" in p.name]  # noqa: E731
    try:
        assert _wait_for(lambda: any(imgtui.backends.path_size(p) > 300_000 for p in tmp_build())), "no progress"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert tmp_build() == []
    with imgtui.open(dest) as r:
        assert len(r) == 10 and r.verify().ok
        assert r[3] == SyntheticDataset(count=10, seed=1).record(3)


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="shared CIFAR-10 test images not present")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cifar_folder_500_images_convert_and_verify(tmp_path, backend, capsys):
    dest = dest_for(tmp_path, backend)
    assert main(["convert", str(SHARED_CIFAR), str(dest), "-b", backend, "--limit", "500", "-q"]) == 0
    assert main(["verify", str(dest), "-q"]) == 0
    with imgtui.open(dest) as r:
        assert len(r) == 500
        assert r[0].image.shape == (32, 32, 3) and r[0].image.dtype == np.uint8


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_then_convert_back_is_bit_exact(tmp_path, backend, capsys):
    """store -> export (PNG + labels.csv) -> convert: same pixels, labels (types too) and metadata."""
    src = dest_for(tmp_path, backend, "src")
    with imgtui.writer(src, backend) as w:
        w.write(imgtui.Record(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000, "7", {"a": [1, 2], "é": "x,\"y\""}))
        w.write(imgtui.Record(np.full((5, 2, 3), 200, np.uint8), 3, {}))
        w.write(imgtui.Record(np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 2000, -1, {"k": None}))
        for k, dt in enumerate(("int8", "int16", "uint32", "int32", "float32", "float64")):
            w.write(imgtui.Record(make_image(dt, (4, 3) if k % 2 else (4, 3, 3), k), k, {"dtype": dt}))
        for k, (dt, shape) in enumerate((("uint8", (3, 4, 5)), ("float32", (2, 4, 3, 3)), ("int16", (4, 3, 2, 1)))):
            w.write(imgtui.Record(make_image(dt, shape, 20 + k), f"vol{k}", {"volume": k}))  # 3-D records
    out = tmp_path / "out"
    assert main(["export", str(src), str(out), "-q"]) == 0
    back = dest_for(tmp_path, backend, "back")
    assert main(["convert", str(out), str(back), "-b", backend, "-q"]) == 0
    with imgtui.open(src) as a, imgtui.open(back) as b:
        assert len(a) == len(b) == 12
        for ra, rb in zip(a, b):
            assert ra == rb  # bit-exact, NaN payloads and -0.0 included


def test_export_of_a_bool_mask_is_a_0_255_png(tmp_path):
    """bool records export as 0/255 PNG masks (they convert back as uint8 0/255, the one dtype
    export does not bring back as it was)."""
    src = tmp_path / "m"
    mask = make_image("bool", (4, 6), 2)
    with imgtui.writer(src, "disk") as w:
        w.write(imgtui.Record(mask, 1))
    out = tmp_path / "out"
    assert main(["export", str(src), str(out), "-q"]) == 0
    back = tmp_path / "back"
    assert main(["convert", str(out), str(back), "-b", "disk", "-q"]) == 0
    with imgtui.open(back) as b:
        assert b[0].image.dtype == np.uint8 and np.array_equal(b[0].image, mask.astype(np.uint8) * 255)


@pytest.fixture
def small_fs(tmp_path):
    """A 20 MB tmpfs (needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_disk_full_is_one_line_and_keeps_the_old_store(small_fs, backend, capsys):
    dest = dest_for(small_fs, backend)
    assert main(["convert", "synthetic:count=30,seed=2", str(dest), "-b", backend, "-q"]) == 0
    code = main(["convert", "synthetic:count=9000", str(dest), "-b", backend, "-q", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 1 and "disk full while writing" in err and err.count("\n") == 1
    assert [p.name for p in small_fs.iterdir()] == [dest.name]
    with imgtui.open(dest) as r:
        assert len(r) == 30 and r.verify().ok
        assert r[29] == SyntheticDataset(count=30, seed=2).record(29)


def test_verify_catches_an_edited_label_in_the_disk_table(tmp_path, capsys):
    dest = tmp_path / "s.disk"
    assert main(["convert", "synthetic:count=20,seed=4", str(dest), "-b", "disk", "-q"]) == 0
    table = dest / "records.csv"
    rows = list(csv.reader(open(table, newline="", encoding="utf-8")))
    col = rows[0].index("label")
    rows[5][col] = "99"
    with open(table, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows(rows)
    assert main(["verify", str(dest), "-q"]) == 1
    out = capsys.readouterr()
    assert "labels do not match the manifest's label counts" in out.err


# -- one parser tree: the app's options and TARGET on the root command ---------------------------

def test_split_target_finds_the_first_positional_that_is_not_a_command():
    from imgtui.cli import split_target

    cmds = {"info", "convert", "browse"}
    assert split_target(["store.h5"], cmds) == ([], "store.h5")
    assert split_target(["--light", "-o", "out", "data", "--workdir", "w"], cmds) == (
        ["--light", "-o", "out", "--workdir", "w"], "data")
    assert split_target(["info", "x.h5"], cmds) == (["info", "x.h5"], None)
    assert split_target(["--dataset", "info"], cmds) == (["--dataset", "info"], None)  # a value, not a command
    assert split_target([], cmds) == ([], None)


def _capture_app(monkeypatch):
    import imgtui.tui.app as app_mod

    calls: list[dict] = []
    monkeypatch.setattr(app_mod, "run_app", lambda **kw: calls.append(kw) or 0)
    return calls


def test_root_options_and_target_reach_the_app(tmp_path, monkeypatch):
    from imgtui.records import Record

    store = tmp_path / "s.lmdb"
    with imgtui.writer(store, "lmdb") as w:
        w.write(Record(np.zeros((4, 4, 3), np.uint8), 1))
    calls = _capture_app(monkeypatch)
    assert main(["--light", "-o", str(tmp_path), str(store)]) == 0
    assert calls[-1] == {"dataset": str(store), "output": str(tmp_path), "workdir": None, "light": True,
                         "browse": str(store)}
    assert main(["browse", str(store)]) == 0
    assert calls[-1]["browse"] == str(store) and calls[-1]["light"] is False
    assert main(["synthetic:count=5", "--workdir", str(tmp_path)]) == 0  # a dataset: selected, no browser
    assert calls[-1]["dataset"] == "synthetic:count=5" and calls[-1]["browse"] is None
    assert calls[-1]["workdir"] == str(tmp_path)
    assert main([]) == 0 and calls[-1]["dataset"] == "synthetic" and calls[-1]["browse"] is None
    assert main([str(tmp_path)]) == 0  # a folder that is not a store: the app opens it as a dataset
    assert calls[-1] == {"dataset": str(tmp_path), "output": ".", "workdir": None, "light": False, "browse": None}


def test_bad_targets_get_one_line(tmp_path, monkeypatch, capsys):
    calls = _capture_app(monkeypatch)
    assert main([str(tmp_path / "nope")]) == 2
    assert main(["browse", str(tmp_path)]) == 2
    assert main(["-d", "synthetic", "synthetic:count=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"imgtui: error: {tmp_path / 'nope'}: no such file or folder, and not a command (commands: append, "
        "bench, browse, claims, convert, export, info, recommend, repair, verify)",
        f"imgtui: error: {tmp_path} is not an imgtui store; to look at a dataset, start imgtui {tmp_path}",
        "imgtui: error: give the dataset once: as TARGET (synthetic:count=3) or with --dataset (synthetic)",
    ]
    assert calls == []


def test_progress_is_one_line_per_step_when_piped_and_rewritten_on_a_terminal():
    import io

    from imgtui.bench.model import Started
    from imgtui.cli import _event_printer

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    events = [Started("store_many", "lmdb", "imgtui", 2000, 1, 2), Started("read_many", "hdf5", "imgtui", 2000, 2, 2)]
    pipe, tty = io.StringIO(), Tty()
    for stream in (pipe, tty):
        show = _event_printer(False, stream)
        for ev in events:
            show(ev)
    assert pipe.getvalue() == "[1/2] store_many lmdb/imgtui 2,000\n[2/2] read_many hdf5/imgtui 2,000\n"
    assert tty.getvalue().count("\r") == 2 and "\n" not in tty.getvalue()


def test_export_volume_cell_that_lies_is_one_line(tmp_path, capsys):
    """An exported volume whose labels.csv says another shape, or a shape that is not a volume, is
    refused in one line naming the file (or skipped with --on-error skip)."""
    src = tmp_path / "v"
    with imgtui.writer(src, "disk") as w:
        w.write(imgtui.Record(make_image("int16", (3, 4, 5), 1), 0))
        w.write(imgtui.Record(make_image("uint8", (4, 5), 2), 1))
    out = tmp_path / "out"
    assert main(["export", str(src), str(out), "-q"]) == 0
    table = (out / "labels.csv").read_text(encoding="utf-8")
    assert ",3x4x5\n" in table.replace("\r\n", "\n")
    for cell, want in (("4x4x5", "not the 4x4x5 volume labels.csv says"), ("4x5x3", "is '4x5x3', not a DxHxW[xC] shape")):
        (out / "labels.csv").write_text(table.replace(",3x4x5", f",{cell}"), encoding="utf-8")
        assert main(["convert", str(out), str(tmp_path / f"b{cell}"), "-b", "disk", "-q"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and want in err[0], err
