"""A benchmark plan before it runs: ``validate_plan`` (one-line PlanError) and ``plan_steps``, the
steps in execution order (per count the floor first, then each method/backend, the peers last,
each experiment of the registry in its run order, one step per reader count for the parallel ones)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends import registry
from ..errors import ImgtuiError, one_line
from .experiments import EXPERIMENT, EXPERIMENTS, run_order
from .methods import ARTICLE_BACKENDS
from .model import ALL_METHODS, PEER_METHOD, BenchPlan
from .peers import PEER_EXPERIMENTS, PEERS


class PlanError(ImgtuiError):
    """A benchmark plan that cannot run (bad backend, count, experiment, option...)."""



def default_repeats(count: int) -> int:
    return 3 if count < 100_000 else 1


def rounds_for(plan: BenchPlan, count: int, experiment: str | None = None) -> int:
    """Rounds of an interleaved plan at ``count`` (the plan's repeats, else the default); an
    experiment whose figure does not vary between trials (bytes on disk) runs once."""
    if experiment is not None and EXPERIMENT[experiment].once:
        return 1
    return plan.repeats or default_repeats(count)


def rotated(items: list, round_no: int) -> list:
    """``items`` rotated left by ``round_no``: round 0 A B C, round 1 B C A, round 2 C A B."""
    if not items:
        return []
    k = round_no % len(items)
    return items[k:] + items[:k]


def validate_plan(plan: BenchPlan) -> None:
    """Raise PlanError (one line) when the plan cannot run."""

    def bad(items, known, what):
        wrong = [x for x in items if x not in known]
        if wrong:
            raise PlanError(f"unknown {what} {', '.join(map(repr, wrong))} (choose from {', '.join(known)})")

    names = tuple(registry.BACKENDS)
    if not plan.backends and any(m not in ("floor", PEER_METHOD) for m in plan.methods):
        raise PlanError(f"no backend chosen (choose from {', '.join(names)})")
    bad(plan.backends, names, "backend")
    for b in plan.backends:
        try:
            registry.get_backend(b)  # registered but its optional package is missing: say what to install
        except ImgtuiError as exc:
            raise PlanError(one_line(exc)) from None
    bad(plan.methods, ALL_METHODS, "method")
    bad(list(getattr(plan, "peers", None) or []), PEERS, "peer")
    bad(plan.experiments, EXPERIMENTS, "experiment")
    if not plan.methods:
        raise PlanError("no method chosen (choose from article, imgtui, floor, peer)")
    if not plan.experiments:
        raise PlanError("no experiment chosen")
    if not plan.counts:
        raise PlanError("no record count chosen")
    for c in plan.counts:
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 1:
            raise PlanError(f"record counts must be whole numbers >= 1, got {c!r}")
    if plan.repeats is not None and (not isinstance(plan.repeats, int) or plan.repeats < 1):
        raise PlanError(f"repeats must be a whole number >= 1, got {plan.repeats!r}")
    if any(EXPERIMENT[e].parallel for e in plan.experiments):
        if not plan.readers or any(not isinstance(k, int) or k < 1 for k in plan.readers):
            raise PlanError(f"reader counts must be whole numbers >= 1, got {plan.readers!r}")
    if plan.workdir is not None and not Path(plan.workdir).is_dir():
        raise PlanError(f"workdir {plan.workdir} is not an existing folder")
    for b, opts in (plan.backend_options or {}).items():
        if b not in names:
            raise PlanError(f"backend options given for unknown backend {b!r}")
        if "imgtui" in plan.methods and b in plan.backends:
            try:
                registry.get_backend(b).writer_cls.check_options(dict(opts))
            except ImgtuiError as exc:
                raise PlanError(one_line(exc)) from None
            except ImportError:
                pass


def plan_peers(plan: BenchPlan) -> list[str]:
    """The peers a plan measures (none without the "peer" method; every peer when it names none)."""
    if PEER_METHOD not in plan.methods:
        return []
    return list(dict.fromkeys(getattr(plan, "peers", None) or PEERS))


@dataclass
class Step:
    experiment: str
    backend: str
    method: str
    count: int
    readers: int | None = None
    #: interleaved plans: the round of this step (0-based)
    round: int = 0

    @property
    def block(self) -> tuple[int, str]:
        """(count, experiment): an interleaved plan's rows are combined over the rounds per block."""
        return (self.count, self.experiment)

    @property
    def group(self) -> tuple[int, str, str]:
        return (self.count, self.backend, self.method)


def plan_steps(plan: BenchPlan) -> list[Step]:
    """The steps of a plan in execution order: per count, the floor first, then each method/backend
    (each with every experiment). An interleaved plan (``plan.interleave``) runs per count, per
    experiment, ``rounds_for`` rounds, each round every method/backend once in an order rotated
    by the round (A B C, B C A, C A B; the reader counts of a parallel experiment together)."""
    exps = [EXPERIMENT[e] for e in run_order(plan.experiments)]
    steps: list[Step] = []
    for count in plan.counts:
        combos: list[tuple[str, str]] = []
        if "floor" in plan.methods:
            combos.append(("numpy", "floor"))
            if any(e.memcpy for e in exps):
                combos.append(("memcpy", "floor"))
        for m in ("article", "imgtui"):
            if m in plan.methods:  # the article has functions for its own three formats only
                combos.extend((b, m) for b in plan.backends if m != "article" or b in ARTICLE_BACKENDS)
        if PEER_METHOD in plan.methods:  # the peers last, each a method of its own
            combos.extend((p, PEER_METHOD) for p in plan_peers(plan))

        def wanted(b: str, m: str, e) -> bool:
            if b == "memcpy" and not e.memcpy:
                return False
            if m == PEER_METHOD:
                return e.name in PEER_EXPERIMENTS
            return not ((m == "article" and not e.article) or (b == "numpy" and not e.floor))

        def add(b: str, m: str, e, r: int = 0) -> None:
            if e.parallel:
                steps.extend(Step(e.name, b, m, count, k, r) for k in plan.readers)
            else:
                steps.append(Step(e.name, b, m, count, None, r))

        if getattr(plan, "interleave", False):
            for e in exps:
                todo = [(b, m) for b, m in combos if wanted(b, m, e)]
                for r in range(rounds_for(plan, count, e.name)):
                    for b, m in rotated(todo, r):
                        add(b, m, e, r)
            continue
        for b, m in combos:
            for e in exps:
                if wanted(b, m, e):
                    add(b, m, e)
    return steps
