"""A small preview thumbnail: half-block Text built in a worker (see ``imgtui.tui.imaging``)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class Preview(Widget):
    """Shows a ready-made half-block thumbnail, or a one-line placeholder."""

    DEFAULT_CSS = """
    Preview {
        width: auto;
        height: auto;
        min-width: 12;
        min-height: 1;
    }
    """

    #: the thumbnail (rich Text of "▀" cells), or None
    thumbnail: reactive[Text | None] = reactive(None, layout=True)
    #: shown when there is no thumbnail
    placeholder: reactive[str] = reactive("no preview", layout=True)

    def render(self) -> Text:
        if self.thumbnail is None:
            return Text(self.placeholder, style="italic")
        return self.thumbnail
