"""The command palette provider: one entry for every action of the app."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import ImgtuiApp

#: (title, help, app action name)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Start benchmark", "Run the benchmark plan (s)", "start"),
    ("Cancel benchmark", "Stop the running benchmark and remove its temporary stores (c)", "cancel"),
    ("Export results", "Write the results as JSON and CSV into the output folder (e)", "export"),
    ("Browse store", "Open the record browser on the selected store (b)", "browse"),
    ("Show plots / results", "Switch between the results table and the plots (p)", "toggle_plots"),
    ("Help", "Keys and how imgtui works (? or F1)", "help"),
    ("Toggle dark / light theme", "Switch between the imgtui dark and light themes (t)", "toggle_theme"),
)


class ImgtuiCommands(Provider):
    """Start, cancel, export, browse, plots, help and theme toggle."""

    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        app: ImgtuiApp = self.app  # type: ignore[assignment]
        return [(title, help_, partial(app.run_action, action)) for title, help_, action in COMMANDS]

    async def discover(self) -> Hits:
        for title, help_, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_)
