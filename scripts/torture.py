"""Fault injection at scale: kill -9 imgtui writes and changes at random moments, N times per
backend and operation, then check what is left (the SQLite crash-test idea).

    python scripts/torture.py --torture 50                 # every backend, every operation
    python scripts/torture.py --torture 20 --backends lmdb --ops append,delete --json out.json
    python scripts/torture.py --torture 50 --backends hdf5 --varying   # records of varying shapes

For each trial: make the old store (or none, for convert), start the operation in a child
process, SIGKILL it after a random delay within the operation's measured duration, then classify:

- ``old``: the store opens with exactly the old records and verifies;
- ``new``: exactly the new records, verifies;
- ``repaired``: old or new, and ``imgtui repair`` had something to finish or roll back;
- ``lost``: the store does not open (or, for convert, something half-written sits at the path);
- ``wrong``: it opens but its records are neither the old nor the new ones.

``lost`` and ``wrong`` must be 0. The same checks, a few trials each, run in CI through the
conformance suite (``tests/backend_suite.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import imgtui  # noqa: E402
from backend_suite import OPS, expected, run_child  # noqa: E402
from imgtui.backends import available, get_backend, open_store  # noqa: E402
from imgtui.errors import ImgtuiError  # noqa: E402


def prepare(d: Path, backend: str, op: str) -> Path:
    p = d / ("s" + get_backend(backend).suffix)
    old, _ = expected(op)
    if old is not None:
        with imgtui.writer(p, backend) as w:
            w.write_many(old)
    return p


def classify(p: Path, op: str) -> str:
    old, new = expected(op)
    if not p.exists():
        return "old" if old is None else "lost"
    try:
        with open_store(p) as r:
            got = list(r)
            ok = r.verify().ok
    except ImgtuiError:
        return "lost"
    if not ok:
        return "wrong"
    outcome = "new" if got == new else "old" if got == old else "wrong"
    if outcome != "wrong" and imgtui.repair(p)["actions"]:
        with open_store(p) as r:
            if list(r) != got:
                return "wrong"
        return "repaired"
    return outcome


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torture", type=int, default=10, metavar="N", help="random kills per backend and operation")
    ap.add_argument("--backends", default=",".join(available()))
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the table as JSON")
    ap.add_argument("--volumes", action="store_true", help="records are 3x8x8x3 volumes")
    ap.add_argument("--varying", action="store_true", help="records of varying shapes (5-8 x 8 x 3)")
    args = ap.parse_args(argv)
    for flag, var in ((args.volumes, "IMGTUI_TEST_VOLUMES"), (args.varying, "IMGTUI_TEST_VARYING")):
        if flag:  # read by the records of this process and of every child
            os.environ[var] = "1"
    rnd = random.Random(args.seed)
    table: dict[str, Counter] = {}
    root = Path(tempfile.mkdtemp(prefix="imgtui-torture-"))
    try:
        for backend in args.backends.split(","):
            for op in args.ops.split(","):
                d = root / f"{backend}-{op}-timing"
                d.mkdir()
                p = prepare(d, backend, op)
                t0 = time.perf_counter()
                res = run_child(op, backend, p, {})
                span = time.perf_counter() - t0
                if res.returncode:
                    print(f"{backend} {op}: the operation fails without a kill: {res.stderr.strip()[-300:]}")
                    return 2
                counts = table.setdefault(f"{backend} {op}", Counter())
                for k in range(args.torture):
                    d = root / f"{backend}-{op}-{k}"
                    d.mkdir()
                    p = prepare(d, backend, op)
                    run_child(op, backend, p, {}, kill_after=rnd.uniform(0.3 * span, span))  # past the start-up
                    killed = root / f"{backend}-{op}-{k}-as-killed"
                    shutil.copytree(d, killed, symlinks=True)  # the store as the kill left it
                    outcome = classify(p, op)
                    counts[outcome] += 1
                    if outcome in ("lost", "wrong"):  # kept to find out why (classify may have repaired it)
                        keep = Path(tempfile.gettempdir()) / f"imgtui-torture-{outcome}-{backend}-{op}-{k}"
                        shutil.rmtree(keep, ignore_errors=True)
                        shutil.move(str(killed), keep)
                        print(f"{backend} {op} kill {k}: {outcome}; the store as killed is kept in {keep}", flush=True)
                    shutil.rmtree(killed, ignore_errors=True)
                    shutil.rmtree(d, ignore_errors=True)
                c = counts
                print(f"{backend:10} {op:17} kills {sum(c.values()):4}  old {c['old']:4}  new {c['new']:4}  "
                      f"repaired {c['repaired']:4}  lost {c['lost']:2}  wrong {c['wrong']:2}   (op {span:.2f} s)",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({k: dict(v) for k, v in table.items()}, indent=1))
    bad = sum(c["lost"] + c["wrong"] for c in table.values())
    print(f"total: {sum(sum(c.values()) for c in table.values())} kills, lost or wrong: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
