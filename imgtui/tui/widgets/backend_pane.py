"""The backend configuration pane: which backends, their options, methods, experiments, counts, repeats.

The backend rows come from the registry: one row per backend (``Backend.display_name``), and on it
a field per option of ``Backend.options`` that fits a row: a Select for an option with choices, a
Checkbox for a bool, an integer Input for an int with a small range (a level 0-9). Options with
large values (byte sizes, record counts) keep the backend's default here; the CLI sets them. Two
backends declaring the same option share one field (as they share one CLI flag: disk and LMDB take
one png level). A field whose option applies only with another option's value (HDF5 level with
compression=gzip) is disabled otherwise, and left out of the options.

Every change posts ``BackendPane.Changed``; the main screen folds the pane's ``config()`` into its
``BenchPlan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.containers import HorizontalGroup, ItemGrid, VerticalScroll
from textual.message import Message
from textual.validation import Integer, Regex
from textual.widgets import Checkbox, Input, Label, Select

from ...bench import backend_info as bi
from ...bench.model import DEFAULT_EXPERIMENTS, LISTED_EXPERIMENTS, METHODS

if TYPE_CHECKING:
    from ...backends.base import Backend, Option

COUNTS = (10, 100, 1_000, 10_000, 100_000)
DEFAULT_COUNTS = (10, 100, 1_000)
COUNT_LABELS = {10: "10", 100: "100", 1_000: "1k", 10_000: "10k", 100_000: "100k"}


@dataclass
class BackendConfig:
    """What the pane says, in BenchPlan terms (plus the export folder)."""

    backends: list[str] = field(default_factory=list)
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    repeats: int | None = None
    workdir: str | None = None
    output: str = "."
    #: measure every figure again instead of reusing those the results folder keeps
    fresh: bool = False


#: cells a backend row may fill before its fields continue on the next line
ROW_WIDTH = 70
#: width of the backend checkbox (and of the indent of a continued row)
CHECK_WIDTH = 10


def shows(opt: "Option") -> bool:
    """Does the pane show a field for ``opt``? Choices, bools and ints of at most 4 digits."""
    if opt.choices or opt.type is bool:
        return True
    if opt.type is int:
        return opt.min is not None and opt.max is not None and max(len(str(opt.min)), len(str(opt.max))) <= 4
    return False


@dataclass
class OptionField:
    """One field of the pane and the (backend, option) pairs it sets."""

    id: str
    users: list[tuple[str, "Option"]]

    @property
    def option(self) -> "Option":
        return self.users[0][1]


def _key(opt: "Option") -> tuple:
    return (opt.name, opt.type, tuple(opt.choices))


class BackendPane(VerticalScroll):
    """Backends, options and what to measure."""

    @dataclass
    class Changed(Message):
        pane: "BackendPane"

    def __init__(
        self,
        *,
        backends: list[str] | None = None,
        methods: list[str] | None = None,
        experiments: list[str] | None = None,
        counts: list[int] | None = None,
        repeats: int | None = None,
        workdir: str | None = None,
        output: str = ".",
        backend_options: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._names = bi.names()
        self._backends = list(bi.benchmark_defaults() if backends is None else backends)
        self._methods = list(METHODS if methods is None else methods)
        self._experiments = list(DEFAULT_EXPERIMENTS if experiments is None else experiments)
        self._counts = list(DEFAULT_COUNTS if counts is None else counts)
        self._repeats = repeats
        self._workdir = workdir
        self._output = output
        self._options = backend_options or {}
        self._backend_cls: dict[str, type[Backend]] = {b: bi.get(b) for b in self._names}
        #: option fields in order; per backend, the fields it reads
        self._fields: list[OptionField] = []
        self._uses: dict[str, list[tuple[OptionField, Option]]] = {b: [] for b in self._names}
        shared: dict[tuple, OptionField] = {}
        for b in self._names:
            for opt in self._backend_cls[b].options:
                if not shows(opt):
                    continue
                f = shared.get(_key(opt))
                if f is None:
                    f = shared[_key(opt)] = OptionField(f"{b}-{opt.name.replace('_', '-')}", [])
                    self._fields.append(f)
                f.users.append((b, opt))
                self._uses[b].append((f, opt))

    def _initial(self, f: OptionField) -> Any:
        b, opt = f.users[0]
        given = (self._options.get(b) or {}).get(opt.name)
        return given if given is not None else bi.effective_default(self._backend_cls[b], opt)

    def _field_widgets(self, f: OptionField) -> list[tuple[Any, int]]:
        """The widgets of one field and the cells they take."""
        b, opt = f.users[0]
        value = self._initial(f)
        words = bi.option_words(opt)
        if opt.type is bool:
            box = Checkbox(words, bool(value), id=f.id, compact=True, tooltip=opt.help)
            return [(box, len(words) + 5)]
        label = Label(words, classes="opt-label")
        if opt.choices:
            width = max(len(str(c)) for c in opt.choices) + 5
            select = Select([(str(c), c) for c in opt.choices], value=value if value in opt.choices else opt.choices[0],
                            allow_blank=False, id=f.id, compact=True, tooltip=opt.help)
            select.styles.width = width
            return [(label, len(words) + 1), (select, width + 1)]
        width = max(len(str(opt.min)), len(str(opt.max))) + 3
        inp = Input("" if value is None else str(value), id=f.id, type="integer", compact=True, classes="level",
                    validators=[Integer(minimum=opt.min, maximum=opt.max, failure_description=f"{opt.min}-{opt.max}")],
                    placeholder="default", tooltip=opt.help)
        inp.styles.width = max(5, width)
        return [(label, len(words) + 1), (inp, max(5, width) + 1)]

    def compose(self) -> ComposeResult:
        # the backend column fits the longest name ("WebDataset"), not a fixed 10 cells
        check_width = max([CHECK_WIDTH] + [len(bi.short_name(b)) + 5 for b in self._names])
        for b in self._names:
            cls = self._backend_cls[b]
            box = Checkbox(bi.short_name(b), b in self._backends, id=f"use-{b}", compact=True,
                           tooltip=cls.description or None)
            box.styles.width = check_width
            rows: list[list[Any]] = [[box]]
            used = check_width
            for f, _opt in self._uses[b]:
                if f.users[0][0] != b:  # shown on the row of the first backend that declares it
                    continue
                parts = self._field_widgets(f)
                need = sum(w for _x, w in parts)
                if used + need > ROW_WIDTH and used > check_width:
                    indent = Label("", classes="opt-indent")
                    indent.styles.width = check_width
                    rows.append([indent])
                    used = check_width
                rows[-1].extend(x for x, _w in parts)
                used += need
            for row in rows:
                with HorizontalGroup(classes="backend-row"):
                    yield from row
        yield Label("Methods", classes="section")
        with ItemGrid(min_column_width=14, classes="toggles", id="methods"):
            for m in METHODS:
                yield Checkbox(m, m in self._methods, id=f"method-{m}", compact=True)
        yield Label("Experiments", classes="section")
        with ItemGrid(min_column_width=22, classes="toggles", id="experiments"):
            for e in LISTED_EXPERIMENTS:
                yield Checkbox(e, e in self._experiments, id=f"exp-{e}", compact=True)
        yield Label("Counts", classes="section")
        with ItemGrid(min_column_width=9, classes="toggles", id="counts"):
            for c in COUNTS:
                yield Checkbox(COUNT_LABELS[c], c in self._counts, id=f"count-{c}", compact=True)
        with HorizontalGroup(classes="field-row"):
            yield Label("repeats", classes="opt-label")
            yield Input("auto" if self._repeats is None else str(self._repeats), id="repeats", compact=True,
                        validators=[Regex(r"^\s*(auto|[1-9]\d*)?\s*$", failure_description="auto or N")],
                        tooltip="auto: 3 below 100,000 records, 1 at 100,000")
            yield Checkbox("measure again", False, id="fresh", compact=True,
                           tooltip="figures measured before for the same dataset, counts and options are "
                                   "reused from the results folder; tick to measure them again")
        with HorizontalGroup(classes="field-row"):
            yield Label("output", classes="opt-label")
            yield Input(self._output, id="output", compact=True, placeholder="folder for exported results",
                        tooltip="Export (e) writes results JSON and CSV here")
        with HorizontalGroup(classes="field-row"):
            yield Label("work dir", classes="opt-label")
            yield Input(self._workdir or "", id="workdir", compact=True, placeholder="system temp folder",
                        tooltip="where the temporary benchmark stores are written (removed afterwards)")

    def on_mount(self) -> None:
        self.border_title = "Backends & benchmark"
        self._sync_enabled()

    def _raw(self, f: OptionField) -> Any:
        """The field's value as the option's type (None: blank or invalid)."""
        opt = f.option
        w = self.query_one(f"#{f.id}")
        if isinstance(w, Select):
            return None if w.value is Select.BLANK else w.value
        if isinstance(w, Checkbox):
            return bool(w.value)
        try:
            value = int(w.value)
        except (TypeError, ValueError):
            return None
        if (opt.min is not None and value < opt.min) or (opt.max is not None and value > opt.max):
            return None
        return value

    def _values(self, b: str) -> dict[str, Any]:
        """Every field backend ``b`` reads, as {option name: value} (invalid fields: the default)."""
        cls = self._backend_cls[b]
        out = {}
        for f, opt in self._uses[b]:
            value = self._raw(f)
            out[opt.name] = value if value is not None else bi.effective_default(cls, opt)
        return out

    def _sync_enabled(self) -> None:
        on_ = {b: self.query_one(f"#use-{b}", Checkbox).value for b in self._names}
        values = {b: self._values(b) for b in self._names if on_[b]}
        for f in self._fields:
            self.query_one(f"#{f.id}").disabled = not any(
                on_[b] and bi.applies(self._backend_cls[b], opt, values[b]) for b, opt in f.users
            )

    @on(Checkbox.Changed)
    @on(Select.Changed)
    @on(Input.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self._sync_enabled()
        self.post_message(self.Changed(self))

    # -- reading the pane ------------------------------------------------------------------
    def config(self) -> BackendConfig:
        """The pane's current settings (invalid fields fall back to their defaults)."""
        q = self.query_one
        backends = [b for b in self._names if q(f"#use-{b}", Checkbox).value]
        options: dict[str, dict[str, Any]] = {}
        for b in backends:
            cls, values = self._backend_cls[b], self._values(b)
            opts = {o.name: values[o.name] for o in cls.options
                    if o.name in values and values[o.name] is not None and bi.applies(cls, o, values)}
            if opts:
                options[b] = opts
        repeats_text = q("#repeats", Input).value.strip().lower()
        repeats = int(repeats_text) if repeats_text.isdigit() and int(repeats_text) > 0 else None
        return BackendConfig(
            backends=backends,
            backend_options=options,
            methods=[m for m in METHODS if q(f"#method-{m}", Checkbox).value],
            experiments=[e for e in LISTED_EXPERIMENTS if q(f"#exp-{e}", Checkbox).value],
            counts=[c for c in COUNTS if q(f"#count-{c}", Checkbox).value],
            repeats=repeats,
            workdir=q("#workdir", Input).value.strip() or None,
            output=q("#output", Input).value.strip() or ".",
            fresh=q("#fresh", Checkbox).value,
        )
