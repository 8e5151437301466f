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
    ("Cancel benchmark / make stores", "Stop what is running; nothing half-written is left (c)", "cancel"),
    ("Export results", "Write the results as JSON and CSV into the output folder (e)", "export"),
    ("Make stores", "Keep a copy of the dataset in each enabled backend in <output>/imgtui-stores (m)", "make_stores"),
    ("Browse store", "Browse the selected store, or the stores made with m (made first if needed) (b)", "browse"),
    ("Show plots / results", "Switch between the results table and the plots (p)", "toggle_plots"),
    ("Help", "Keys and how imgtui works (? or F1)", "help"),
    ("Toggle dark / light theme", "Switch between the imgtui dark and light themes (t)", "toggle_theme"),
)


def action_target(app: "ImgtuiApp", action: str) -> object:
    """The node that runs ``action``: the app if it has the action, else the main screen."""
    if hasattr(app, f"action_{action}"):
        return app
    return app.main_screen


class ImgtuiCommands(Provider):
    """Start, cancel, export, make stores, browse, plots, help and theme toggle."""

    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        app: ImgtuiApp = self.app  # type: ignore[assignment]
        return [(title, help_, partial(app.run_action, action, action_target(app, action)))
                for title, help_, action in COMMANDS]

    async def discover(self) -> Hits:
        for title, help_, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_)
