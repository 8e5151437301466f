import subprocess
import sys


def test_storage_and_bench_do_not_import_textual():
    code = (
        "import sys, imgtui, imgtui.backends, imgtui.datasets, imgtui.bench.model, imgtui.cli;"
        "from imgtui.backends import get_backend;"
        "[get_backend(b) for b in ('disk', 'lmdb', 'hdf5')];"
        "import imgtui.bench.run, imgtui.bench.runner;"
        "assert 'textual' not in sys.modules, 'textual imported by storage/bench code'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
