"""Another process fills the disk while imgtui appends: outcome per run (old/new/lost/wrong, exit
codes, signals). Needs a small filesystem to fill, e.g. as root:

    mkdir -p /mnt/tfull && mount -t tmpfs -o size=48m tmpfs /mnt/tfull
    python scripts/fill_disk_during_append.py hdf5,lmdb,disk 6 [/mnt/tfull]
"""
import os, subprocess, sys, time, random, shutil, signal, json
import imgtui
from imgtui.datasets import SyntheticDataset
root = sys.argv[3] if len(sys.argv) > 3 else "/mnt/tfull"
res = {}
for backend in sys.argv[1].split(","):
    out = {"old": 0, "new": 0, "lost": 0, "wrong": 0, "signal": 0, "exit1": 0, "exit0": 0}
    for run in range(int(sys.argv[2])):
        for n in os.listdir(root):
            p = os.path.join(root, n); shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
        path = os.path.join(root, "s" + {"disk": "", "lmdb": ".lmdb", "hdf5": ".h5"}[backend])
        old = list(SyntheticDataset(count=300, seed=1, size=(64, 64), channels=3))
        with imgtui.writer(path, backend) as w: w.write_many(old)
        child = subprocess.Popen([sys.executable, "-m", "imgtui", "append", "synthetic:count=3000,size=64x64,seed=2", path, "-q"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(random.uniform(0.3, 1.2))
        filler = subprocess.run(["dd", "if=/dev/zero", f"of={root}/filler", "bs=1M", "count=100"], capture_output=True)
        err = child.communicate(timeout=300)[1]
        rc = child.returncode
        if rc < 0: out["signal"] += 1
        elif rc == 0: out["exit0"] += 1
        else: out["exit1"] += 1
        os.unlink(f"{root}/filler")
        try:
            with imgtui.open(path) as r:
                got = list(r); ok = r.verify().ok
            new = old + list(SyntheticDataset(count=3000, seed=2, size=(64, 64), channels=3))
            out["old" if got == old and ok else "new" if got == new and ok else "wrong"] += 1
            if not ok: print("verify:", imgtui.open(path).verify().summary(), os.listdir(path) if os.path.isdir(path) else "")
        except imgtui.ImgtuiError as e:
            out["lost"] += 1; print("lost:", e)
        if rc:
            print(backend, "rc", rc, (err.strip().splitlines() or [""])[-1][:160])
    res[backend] = out
    print(backend, out, flush=True)
