"""Hostile inputs and hostile situations: a destination that is (or holds, or lies inside) the
source, processes left behind by a killed conversion, image files that claim huge sizes, symlinks
that leave an imported folder."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgtui.convert import convert
from imgtui.cli import main
from imgtui.datasets import open_dataset
from imgtui.errors import ImgtuiError
from imgtui.convert.parallel import convert_sharded


def make_folder(root: Path, classes=("a", "b"), per=3, size=8) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per):
            Image.fromarray(np.full((size, size), i * 10 + len(c), np.uint8)).save(root / c / f"{i}.png")
    return root


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) -> sha256 of its bytes."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(path)) + "/"] = "dir"
    return out


def cli_error(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


# -- SRC and DEST must not overlap ---------------------------------------------------------------
@pytest.fixture
def src(tmp_path):
    return make_folder(tmp_path / "src")


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("form", ["same", "slash", "dot", "symlink"])
def test_convert_source_onto_itself_is_refused(tmp_path, src, capsys, monkeypatch, form, sharded):
    monkeypatch.chdir(tmp_path)
    before = snapshot(src)
    if form == "symlink":
        (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    dest = {"same": "src", "slash": "src/", "dot": "./src/../src", "symlink": "alias"}[form]
    extra = ["--shards", "2"] if sharded else []
    code, err = cli_error(capsys, "convert", "src", dest, "-b", "disk", "--overwrite", "-q", *extra)
    assert code == 1
    assert err.startswith("imgtui: error: cannot convert src into ") and "same path" in err
    assert len(err.splitlines()) == 1
    assert snapshot(src) == before
    assert sorted(os.listdir(tmp_path)) == sorted(["src"] + (["alias"] if form == "symlink" else []))


@pytest.mark.parametrize("backend", ["disk", "lmdb", "hdf5"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_dest_inside_source_is_refused(tmp_path, src, capsys, backend, overwrite):
    before = snapshot(src)
    dest = src / "a" / ("store.h5" if backend == "hdf5" else "store")
    code, err = cli_error(capsys, "convert", src, dest, "-b", backend, "-q", *(["--overwrite"] if overwrite else []))
    assert code == 1
    assert "lies inside the source" in err and len(err.splitlines()) == 1
    assert snapshot(src) == before
    with pytest.raises(ImgtuiError, match="lies inside the source"):
        convert_sharded(str(src), dest, backend, shards=2)
    with pytest.raises(ImgtuiError, match="lies inside the source"):
        convert(open_dataset(src), dest, backend)
    assert snapshot(src) == before


def test_dest_inside_source_through_a_symlink(tmp_path, src, capsys):
    (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    before = snapshot(src)
    code, err = cli_error(capsys, "convert", src, tmp_path / "alias" / "b" / "new", "-b", "lmdb", "-q")
    assert code == 1 and "lies inside the source" in err
    assert snapshot(src) == before


def test_source_inside_overwritten_dest_is_refused(tmp_path, src, capsys):
    before = snapshot(src)
    code, err = cli_error(capsys, "convert", src / "a", tmp_path, "-b", "disk", "--overwrite", "-q")
    assert code == 1
    assert "lies inside it and would be deleted" in err and len(err.splitlines()) == 1
    with pytest.raises(ImgtuiError, match="would be deleted"):
        convert_sharded(str(src / "a"), tmp_path, "disk", shards=2, overwrite=True)
    assert snapshot(src) == before


@pytest.mark.parametrize("sharded", [False, True])
def test_npz_onto_itself_is_refused(tmp_path, capsys, sharded):
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4))
    before = npz.read_bytes()
    extra = ["--shards", "2"] if sharded else []
    code, err = cli_error(capsys, "convert", npz, npz, "-b", "hdf5", "--overwrite", "-q", *extra)
    assert code == 1 and "same path" in err
    assert npz.read_bytes() == before


def test_store_onto_itself_is_refused(tmp_path, capsys):
    store = tmp_path / "s.lmdb"
    assert main(["convert", "synthetic:count=5", str(store), "-b", "lmdb", "-q"]) == 0
    capsys.readouterr()
    before = snapshot(store)
    code, err = cli_error(capsys, "convert", store, store, "-b", "lmdb", "--overwrite", "-q")
    assert code == 1 and "same path" in err
    code, err = cli_error(capsys, "append", tmp_path / "s.lmdb/", store, "-q")
    assert code == 1 and "same path" in err
    assert snapshot(store) == before


def test_append_store_inside_source_is_refused(tmp_path, src, capsys):
    store = src / "a" / "st"
    # written before the check existed would be refused now; make it by hand elsewhere and move it in
    assert main(["convert", "synthetic:count=3,size=8,channels=1", str(tmp_path / "st"), "-b", "disk", "-q"]) == 0
    os.rename(tmp_path / "st", store)
    capsys.readouterr()
    before = snapshot(src)
    code, err = cli_error(capsys, "append", src, store, "-q")
    assert code == 1 and "lies inside the source" in err
    assert snapshot(src) == before


def test_unrelated_paths_still_convert(tmp_path, src, capsys):
    (tmp_path / "srcx").mkdir()  # a sibling whose name starts like the source is not "inside" it
    assert main(["convert", str(src), str(tmp_path / "srcx" / "st"), "-b", "disk", "-q"]) == 0
    assert main(["convert", str(src), str(tmp_path / "src2"), "-b", "disk", "-q"]) == 0
    assert main(["convert", str(src), str(tmp_path / "src2"), "-b", "disk", "-q", "--overwrite"]) == 0


# -- no process outlives a killed conversion -----------------------------------------------------
def _alive(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    "args, want",
    [
        (["-b", "disk"], 2),  # the PNG encoder pool
        (["-b", "lmdb", "--shards", "4", "--workers", "2"], 2),  # shard workers
        (["-b", "disk", "--shards", "4", "--workers", "2"], 4),  # shard workers and their encoders
    ],
    ids=["disk-encoders", "shard-workers", "shard-workers-with-encoders"],
)
def test_children_die_with_a_killed_convert(tmp_path, args, want):
    psutil = pytest.importorskip("psutil")
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    dest = tmp_path / "x"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgtui", "convert", "synthetic:count=200000", str(dest), *args, "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    kids: list = []
    try:
        parent = psutil.Process(proc.pid)
        t0 = time.time()
        while time.time() - t0 < 120 and proc.poll() is None:
            kids = [k for k in parent.children(recursive=True) if _alive(k)]
            if len(kids) >= want:
                break
            time.sleep(0.05)
        assert len(kids) >= want, f"only {len(kids)} child processes appeared"
        time.sleep(0.3)  # let them settle into their work
        kids = parent.children(recursive=True)
    finally:
        proc.kill()
        proc.wait()
    t0 = time.time()
    while any(_alive(k) for k in kids) and time.time() - t0 < 15:
        time.sleep(0.05)
    left = [k.pid for k in kids if _alive(k)]
    for k in kids:  # never leave them behind, even when the test fails
        if _alive(k):
            k.kill()
    assert left == [], f"processes outlived the killed convert: {left}"


# -- pixel limits, checked from the header -------------------------------------------------------
def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def header_png(w: int, h: int, depth: int = 16, ctype: int = 2, raw: int = 1 << 16) -> bytes:
    """A PNG whose IHDR claims w x h, with a tiny IDAT (``raw`` zero bytes, compressed)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * raw, 9)) + _chunk(b"IEND", b"")


@pytest.fixture
def bomb_folder(tmp_path):
    root = make_folder(tmp_path / "imgs", per=2)
    (root / "a" / "bomb.png").write_bytes(header_png(30000, 30000))
    return root


def test_png_bomb_is_refused_from_its_header(bomb_folder, monkeypatch):
    psutil = pytest.importorskip("psutil")
    import imgtui.datasets.folder as folder

    def never(*a, **k):
        raise AssertionError("the file reached Pillow")

    monkeypatch.setattr(folder, "_open_lazy", never)  # refused before Pillow even parses it
    ds = open_dataset(bomb_folder)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    with pytest.raises(ImgtuiError) as err:
        folder.decode_image(bomb_folder / "a" / "bomb.png")
    seconds = time.perf_counter() - t0
    growth = proc.memory_info().rss - rss0
    msg = str(err.value)
    assert "\n" not in msg and "bomb.png" in msg
    assert "30000x30000 image (900,000,000 pixels) is over the limit of 89,478,485 pixels" in msg
    assert growth < 20e6, f"RSS grew by {growth / 1e6:.1f} MB"
    assert seconds < 5
    monkeypatch.undo()
    with pytest.raises(ImgtuiError, match="bomb.png: 30000x30000 image"):
        list(ds)


def test_png_bomb_cli_stop_and_skip(tmp_path, bomb_folder, capsys):
    code, err = cli_error(capsys, "convert", bomb_folder, tmp_path / "s", "-b", "lmdb", "-q")
    assert code == 1 and "bomb.png: 30000x30000 image" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()
    assert main(["convert", str(bomb_folder), str(tmp_path / "s"), "-b", "lmdb", "-q", "--on-error", "skip"]) == 0
    out = capsys.readouterr()
    assert "wrote 4 records" in out.out and "skipped 1 unreadable file(s)" in out.out
    # the file's own warning (with the reason), then the one line naming every file not imported
    lines = out.err.strip().splitlines()
    assert len(lines) == 2 and "bomb.png: 30000x30000 image" in lines[0]
    assert lines[1] == "imgtui: skipped 1 file: 1 unreadable: a/bomb.png"


def test_large_16bit_png_gets_one_line_not_a_pillow_warning(tmp_path, recwarn):
    from imgtui.datasets.folder import decode_image

    path = tmp_path / "big.png"
    path.write_bytes(header_png(12000, 12000, depth=16, ctype=0))
    with pytest.raises(ImgtuiError) as err:
        decode_image(path)
    assert "12000x12000 image (144,000,000 pixels) is over the limit" in str(err.value)
    assert "--max-pixels" in str(err.value)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def _images(root: Path, w: int = 40, h: int = 30) -> Path:
    rng = np.random.default_rng(3)
    for c in ("x", "y"):
        (root / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / "i.png")
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / c / "j.tif")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / "k.jpg")
    return root


def test_max_pixels_override(tmp_path, capsys):
    root = _images(tmp_path / "imgs")  # 40 x 30 = 1,200 pixels each
    code, err = cli_error(capsys, "convert", root, tmp_path / "a", "-b", "hdf5", "-q", "--max-pixels", "1000")
    assert code == 1 and "40x30 image (1,200 pixels) is over the limit of 1,000 pixels" in err
    code, err = cli_error(capsys, "convert", f"{root}:max_pixels=1000", tmp_path / "a", "-b", "hdf5", "-q")
    assert code == 1 and "over the limit of 1,000 pixels" in err
    assert main(["convert", str(root), str(tmp_path / "b"), "-b", "hdf5", "-q", "--max-pixels", "1200"]) == 0
    assert main(["convert", f"{root}:max_pixels=1200", str(tmp_path / "c"), "-b", "hdf5", "-q"]) == 0
    # the flag wins over the spec; 0 means no limit; sharded workers get it too
    assert main(["convert", f"{root}:max_pixels=10", str(tmp_path / "d"), "-b", "hdf5", "-q", "--max-pixels", "0"]) == 0
    code, err = cli_error(capsys, "convert", root, tmp_path / "e", "-b", "lmdb", "-q", "--max-pixels", "1000",
                          "--shards", "2", "--workers", "2")
    assert code == 1 and "over the limit of 1,000 pixels" in err
    code, err = cli_error(capsys, "convert", "synthetic:count=3", tmp_path / "f", "-b", "lmdb", "-q", "--max-pixels", "5")
    assert code == 1 and "--max-pixels applies to image folders only" in err


@pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
def test_max_pixels_above_pillows_limit_decodes_without_its_warning(tmp_path, monkeypatch, ext):
    import warnings

    from imgtui.datasets.folder import decode_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above 1,000 and refuses above 2,000
    path = tmp_path / f"i.{ext}"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(path)  # 2,500 pixels
    with pytest.raises(ImgtuiError, match="over the limit of 1,000 pixels"):
        decode_image(path)  # the default limit follows Pillow's setting
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(path, max_pixels=2500).shape == (50, 50, 3)
        assert decode_image(path, max_pixels=0).shape == (50, 50, 3)


# -- symlinks in an imported folder --------------------------------------------------------------
@pytest.fixture
def linked(tmp_path):
    root = make_folder(tmp_path / "imgs", per=2)
    outside = make_folder(tmp_path / "outside", classes=("o",), per=2)
    (root / "a" / "leak.png").symlink_to(outside / "o" / "0.png")  # a file leaving the folder
    (root / "c").symlink_to(outside / "o", target_is_directory=True)  # a folder leaving it
    (root / "a" / "same.png").symlink_to("0.png")  # a link inside the folder: read as usual
    return root


def test_symlinks_leaving_the_folder_are_skipped_and_named(linked):
    said = []
    ds = open_dataset(linked, warn=said.append)
    assert ds.files == ["a/0.png", "a/1.png", "a/same.png", "b/0.png", "b/1.png"]
    assert said == ["skipped 2 symlinks leaving the folder: a/leak.png, c/; use --follow-symlinks to read them"]
    assert "2 symlinks not followed" in ds.describe()
    with pytest.warns(RuntimeWarning, match="skipped 2 symlinks leaving the folder"):
        open_dataset(linked)  # without warn: a Python warning, like a skipped file


def test_follow_symlinks_reads_them(linked):
    said = []
    ds = open_dataset(linked, warn=said.append, follow_symlinks=True)
    assert ds.files == ["a/0.png", "a/1.png", "a/leak.png", "a/same.png", "b/0.png", "b/1.png", "c/0.png", "c/1.png"]
    assert said == []
    assert len(list(ds)) == 8
    assert open_dataset(f"{linked}:follow_symlinks=yes").files == ds.files


def test_symlinked_folder_inside_and_loops(tmp_path):
    root = make_folder(tmp_path / "imgs", per=1)
    (root / "a" / "again").symlink_to(root / "b", target_is_directory=True)
    (root / "b" / "up").symlink_to(root, target_is_directory=True)  # a loop
    said = []
    assert open_dataset(root, warn=said.append).files == ["a/0.png", "b/0.png"]
    assert said == ["skipped 2 symlinks to folders or leaving the folder: a/again/, b/up/; use --follow-symlinks to read them"]
    said.clear()
    ds = open_dataset(root, warn=said.append, follow_symlinks=True)
    assert ds.files == ["a/0.png", "a/again/0.png", "b/0.png"]
    assert len(said) == 1 and said[0].startswith("did not enter 2 symlinked folder(s) linking back")


def test_cli_says_which_symlinks_once_at_the_end(tmp_path, linked, capsys):
    for extra in ([], ["--shards", "2", "--workers", "2"]):
        dest = tmp_path / f"s{len(extra)}"
        assert main(["convert", str(linked), str(dest), "-b", "lmdb", "-q", *extra]) == 0
        out = capsys.readouterr()
        assert "wrote 5 records" in out.out and "skipped" not in out.out  # not counted as unreadable files
        assert out.err.strip().splitlines() == [
            "imgtui: warning: skipped 2 symlinks leaving the folder: a/leak.png, c/; use --follow-symlinks to read them"
        ]
    assert main(["convert", str(linked), str(tmp_path / "f"), "-b", "lmdb", "-q", "--follow-symlinks"]) == 0
    out = capsys.readouterr()
    assert "wrote 8 records" in out.out and out.err == ""


def test_labels_csv_naming_a_skipped_symlink(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "x.png")
    outside = tmp_path / "secret.png"
    Image.fromarray(np.ones((4, 4), np.uint8)).save(outside)
    (root / "y.png").symlink_to(outside)
    (root / "labels.csv").write_text("file,label\nx.png,0\ny.png,1\n")
    with pytest.raises(ImgtuiError, match="row names y.png, behind the symlink y.png which is not followed .* use --follow-symlinks"):
        open_dataset(root, warn=lambda m: None)
    assert [r.label for r in open_dataset(root, follow_symlinks=True)] == [0, 1]


def test_only_symlinked_classes(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    outside = make_folder(tmp_path / "outside", per=1)
    (root / "a").symlink_to(outside / "a", target_is_directory=True)
    with pytest.raises(ImgtuiError, match=r"no images found .*skipped 1 symlink leaving the folder: a/; use --follow-symlinks to read it"):
        open_dataset(root)
    assert open_dataset(root, follow_symlinks=True).files == ["a/0.png"]


# -- one-line messages for hostile folders -------------------------------------------------------
def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "imgtui", *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_named_pipes_do_not_hang(tmp_path):
    root = make_folder(tmp_path / "imgs", per=2)
    os.mkfifo(root / "a" / "pipe.png")
    res = run_cli("convert", root, tmp_path / "s", "-b", "lmdb", "-q")
    assert res.returncode == 1
    assert res.stderr.strip().endswith("pipe.png: not a regular file (a named pipe, device or socket)")
    res = run_cli("convert", root, tmp_path / "s", "-b", "lmdb", "-q", "--on-error", "skip")
    assert res.returncode == 0 and "wrote 4 records" in res.stdout and "skipped 1 unreadable file(s)" in res.stdout
    os.mkfifo(tmp_path / "x.npz")
    res = run_cli("convert", tmp_path / "x.npz", tmp_path / "t", "-b", "lmdb", "-q")
    assert res.returncode == 1 and "x.npz: not a regular file" in res.stderr


@pytest.mark.parametrize(
    "cell, message",
    [
        ('{"a": NaN}', "metadata of y.png holds NaN, which JSON does not allow"),
        ('{"a": 1e999}', "metadata of y.png holds 1e999, which JSON does not allow"),
        ("[" * 50000 + "]" * 50000, "metadata of y.png is nested too deeply"),
        ("{bad", "metadata of y.png is not valid JSON"),
    ],
    ids=["nan", "inf", "deep", "broken"],
)
def test_damaged_metadata_cells(tmp_path, capsys, cell, message):
    root = tmp_path / "flat"
    root.mkdir()
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / name)
    quoted = '"' + cell.replace('"', '""') + '"'
    (root / "labels.csv").write_text(f'file,label,label_type,metadata\nx.png,1,int,"{{}}"\ny.png,2,int,{quoted}\n')
    code, err = cli_error(capsys, "convert", root, tmp_path / "s", "-b", "lmdb", "-q")
    assert code == 1 and err.endswith(message) and len(err.splitlines()) == 1


def test_deeply_nested_folder(tmp_path):
    root = tmp_path / "deep"
    d = root / "a"
    d.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        for _ in range(1200):
            os.mkdir("d")
            os.chdir("d")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save("x.png")
    finally:
        os.chdir(cwd)
    try:
        res = run_cli("convert", root, tmp_path / "s", "-b", "lmdb", "-q")
    finally:
        _remove_nested(d)  # shutil.rmtree (pytest's clean-up) recurses as deep as the folders
    assert "unexpected" not in res.stderr and "Traceback" not in res.stderr
    if res.returncode:  # Python < 3.12 walks folders recursively
        assert res.stderr.strip() == f"imgtui: error: {root}: folders nested too deeply to list (hundreds of levels)"


def _remove_nested(top: Path) -> None:
    """Remove top/d/d/.../d without recursion: down with chdir, then rmdir on the way up."""
    cwd = os.getcwd()
    depth = 0
    try:
        os.chdir(top)
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        for name in os.listdir("."):
            os.unlink(name)
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(cwd)


def _without_root_powers() -> list[str] | None:
    """A command prefix under which file permissions apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv") is None:
        return None
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_unreadable_sources_are_named(tmp_path):
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("cannot drop root's file-permission override here")
    root = make_folder(tmp_path / "imgs", per=1)
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((2, 4, 4), np.uint8), labels=np.arange(2))
    sub = root / "b"

    def run(src):
        return subprocess.run([*prefix, sys.executable, "-m", "imgtui", "convert", str(src), str(tmp_path / "s"),
                               "-b", "lmdb", "-q"], capture_output=True, text=True, timeout=120)

    try:
        os.chmod(root / "a" / "0.png", 0)
        res = run(root)
        assert res.returncode == 1 and res.stderr.strip() == f"imgtui: error: {root / 'a' / '0.png'}: permission denied"
        os.chmod(root / "a" / "0.png", 0o644)
        os.chmod(sub, 0)
        res = run(root)
        assert res.returncode == 1 and res.stderr.strip() == f"imgtui: error: {sub}: cannot list folder (Permission denied)"
        os.chmod(sub, 0o755)
        os.chmod(root, 0)
        res = run(root)
        assert res.returncode == 1 and res.stderr.strip() == f"imgtui: error: {root}: permission denied (cannot list the folder)"
        os.chmod(root, 0o755)
        os.chmod(npz, 0)
        res = run(npz)
        assert res.returncode == 1 and res.stderr.strip() == f"imgtui: error: {npz}: permission denied (cannot read the file)"
    finally:
        for p in (root, sub, root / "a" / "0.png", npz):
            os.chmod(p, 0o755)
