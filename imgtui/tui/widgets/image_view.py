"""A widget that shows one pre-rendered image (half-block rich Text) or a one-line message.

The widget never decodes or resizes anything: a worker renders the Text for the widget's
``content_size`` (see :func:`imgtui.tui.imaging.thumbnail`) and the screen hands it over with
:meth:`ImageView.show_image`. When the widget is resized it posts :class:`ImageView.Resized` so the
screen can render the image again for the new size.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widget import Widget


class ImageView(Widget):
    DEFAULT_CSS = """
    ImageView {
        width: 1fr;
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
    }
    """

    @dataclass
    class Resized(Message):
        view: "ImageView"
        columns: int
        rows: int

    def __init__(self, message: str = "", *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._text: Text | None = None
        self._message = message
        #: what the current image shows (e.g. record index); the screen uses it to skip stale images
        self.key: object = None

    @property
    def cells(self) -> tuple[int, int]:
        """(columns, rows) available for the image."""
        size = self.content_size
        return max(1, size.width), max(1, size.height)

    @property
    def has_image(self) -> bool:
        return self._text is not None

    @property
    def message(self) -> str:
        return self._message

    def show_image(self, text: Text, key: object = None) -> None:
        self._text = text
        self._message = ""
        self.key = key
        self.refresh()

    def show_message(self, message: str, key: object = None) -> None:
        self._text = None
        self._message = message
        self.key = key
        self.refresh()

    def render(self) -> Text:
        if self._text is not None:
            return self._text
        return Text(self._message, no_wrap=False)

    def on_resize(self, event: events.Resize) -> None:
        cols, rows = self.cells
        self.post_message(self.Resized(self, cols, rows))
