"""Pick a label from those in the store (with their counts): ``l`` in the browser."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


def label_counts(labels: Sequence) -> list[tuple[str, int]]:
    """(label text, records) most common first, ties by label."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":  # int labels: counted by numpy
        values, n = np.unique(labels, return_counts=True)
        pairs = [(str(int(v)), int(c)) for v, c in zip(values, n)]
    else:
        pairs = list(Counter(str(label) for label in labels).items())
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))


class LabelPicker(ModalScreen[str | None]):
    """Dismissed with the chosen label's text, or None."""

    DEFAULT_CSS = """
    LabelPicker { align: center middle; }
    LabelPicker #label-box { width: 60; max-width: 90%; height: 80%; border: round $primary; background: $surface; }
    LabelPicker #label-title { height: 1; padding: 0 1; color: $text-muted; }
    LabelPicker OptionList { height: 1fr; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", tooltip="Close without filtering")]

    def __init__(self, labels: Sequence) -> None:
        super().__init__()
        self.counts = label_counts(labels)

    def compose(self) -> ComposeResult:
        with Vertical(id="label-box"):
            yield Static(f"{len(self.counts):,} labels · Enter shows the records with that label", id="label-title")
            width = max((len(f"{n:,}") for _l, n in self.counts), default=1)
            yield OptionList(*(Option(f"{n:>{width},}  {label}", id=str(i)) for i, (label, n) in enumerate(self.counts)),
                             id="labels")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.counts[int(event.option.id or 0)][0])

    def action_cancel(self) -> None:
        self.dismiss(None)
