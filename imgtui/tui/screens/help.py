"""The help screen (``?`` / F1): what imgtui does and the key bindings of the screen below."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from rich.markdown import Markdown
from textual.widgets import Static

from ...bench import backend_info as bi

INTRO = """\
# imgtui

Store an image dataset in {kinds} stores, and measure which suits your images.

1. Pick a dataset on the left (the built-in synthetic set, an image folder, CIFAR batches, an
   `.npz` file or an existing store). Enter loads a path; → accepts the completion.
2. Choose backends, options, methods, experiments and record counts on the right. In a small
   terminal the Dataset, Backends and Results parts are tabs: **v** shows the next one.
3. Press **s** to start. Rows appear as results arrive, **p** shows the plots; **c** cancels
   (Escape asks first; temporary stores are removed), **e** exports JSON and CSV into the output folder.
4. The benchmark deletes its stores. Press **m** (*Make stores*) to keep a copy of the dataset in
   each enabled backend: {paths} (all records, or
   the largest selected count if the dataset is bigger; replacing existing ones asks first).
5. Press **b** to browse the records (image, label, metadata, checksum) of those stores; if there
   are none yet (or they were made from other data or options), **b** makes them first. In the browser, **c** compares the same record across
   {names}. With an existing store as the dataset, **b** browses it directly.

Methods: *article* is the straightforward way (one write per record), *imgtui* the tuned writer,
*floor* is `np.save`/`np.load` of the same images as one `.npy` file (plus an in-memory copy):
the reference no store can beat.
"""


def intro() -> str:
    """The intro, naming the registry's backends."""
    names = bi.names()
    kinds = []
    for b in names:
        short, plain = bi.short_name(b), bi.plain_name(b)
        kinds.append(f"**{short}**" + (f" ({plain})" if plain != short else ""))
    suffixes = [bi.store_suffix(b) for b in names]
    paths = bi.human_list([f"`<output>/imgtui-stores/<name>{suffixes[0]}`"] + [f"`{s}`" for s in suffixes[1:]])
    return INTRO.format(kinds=bi.human_list(kinds), paths=paths,
                        names=bi.human_list(bi.short_name(b) for b in names))


def bindings_markdown(rows: list[tuple[str, str]]) -> str:
    lines = ["## Keys", "", "| Key | Action |", "|---|---|"]
    for key, description in rows:
        lines.append(f"| `{key}` | {description} |")
    lines += ["", "The mouse works too: click buttons, checkboxes, tabs and table headers (to sort)."]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """A modal with the intro and the current key bindings."""

    BINDINGS = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close help"),
    ]

    def __init__(self, bindings: list[tuple[str, str]], text: str | None = None) -> None:
        """``bindings``: the (keys, description) rows of the screen below; ``text``: that screen's
        own intro (markdown), the main screen's when None."""
        super().__init__()
        #: the help as markdown (what is drawn)
        self.source = (text or intro()) + "\n" + bindings_markdown(bindings)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            # one Static holding Rich's Markdown: Textual's Markdown widget mounts a widget per block
            # and per table cell (measured: help took 0.35 s to open on a quiet machine)
            yield Static(Markdown(self.source), id="help-text")

    def on_mount(self) -> None:
        try:
            body = self.query_one("#help-body")
        except NoMatches:  # removed before it was mounted (closed at once, or the app is exiting)
            return
        body.border_title = "Help"
        body.border_subtitle = "Escape closes"
