"""A widget that shows one pre-rendered image (half-block rich Text) or a one-line message.

The widget never decodes or resizes anything: a worker renders the Text for the widget's
``content_size`` (see :func:`imgtui.tui.imaging.thumbnail`) and the screen hands it over with
:meth:`ImageView.show_image`. When the widget is resized it posts :class:`ImageView.Resized` so the
screen can render the image again for the new size.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.strip import Strip
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
        self._strips: list[Strip] = []
        #: ((width, height, background), the centred lines) of the last size drawn
        self._placed: tuple | None = None
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
        """Show a half-block image given as rich Text (turned into strips once here)."""
        self.show_lines([list(line.render(self.app.console)) for line in text.split("\n", allow_blank=True)], key, text)

    def show_lines(self, lines: list[list[Segment]], key: object = None, text: Text | None = None) -> None:
        """Show a half-block image given as lines of Segments (``imaging.thumbnail_lines``, built
        in a worker): no Rich rendering on the UI thread, no layout; the centred lines are made
        once per widget size, so a repaint costs a list lookup."""
        self._text = text if text is not None else Text()
        self._strips = [Strip(line) for line in lines]
        self._placed = None
        self._message = ""
        self.key = key
        self.refresh()

    def show_message(self, message: str, key: object = None) -> None:
        self._text = None
        self._strips = []
        self._placed = None
        self._message = message
        self.key = key
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """The image centred in the widget, or the message centred on the middle line."""
        width, height = self.size.width, self.size.height
        style = self.rich_style
        blank = Style(bgcolor=style.bgcolor) if style.bgcolor else Style()
        if self._text is not None:
            placed = self._placed
            if placed is None or placed[0] != (width, height, blank):
                placed = self._placed = ((width, height, blank), self._place(width, height, blank))
            return placed[1][y] if 0 <= y < len(placed[1]) else Strip.blank(width, blank)
        lines = Text(self._message).wrap(self.app.console, max(1, width), justify="center") if self._message else []
        top = max(0, (height - len(lines)) // 2)
        row = y - top
        if 0 <= row < len(lines):
            segments = list(lines[row].render(self.app.console))
            return Strip(segments).apply_style(style).extend_cell_length(width, blank).crop(0, width)
        return Strip.blank(width, blank)

    def _place(self, width: int, height: int, blank: Style) -> list[Strip]:
        """The image's lines centred in ``width`` x ``height`` cells."""
        top = max(0, (height - len(self._strips)) // 2)
        out = []
        for y in range(height):
            row = y - top
            if 0 <= row < len(self._strips):
                strip = self._strips[row].crop(0, width)
                left = max(0, (width - strip.cell_length) // 2)
                out.append(Strip([Segment(" " * left, blank), *strip,
                                  Segment(" " * (width - left - strip.cell_length), blank)], width))
            else:
                out.append(Strip.blank(width, blank))
        return out

    def on_resize(self, event: events.Resize) -> None:
        cols, rows = self.cells
        self.post_message(self.Resized(self, cols, rows))
