"""What the command palette and the help screen list: generated from the bindings of the screen
they are opened on (its focused widget, the screen and the app), so each screen's own actions
appear and no list is kept by hand."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Iterable

from textual.app import SystemCommand
from textual.binding import Binding

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen

#: the app's own keys that Textual binds (listed in help, already in the palette as system commands)
FIXED_KEYS = (
    Binding("ctrl+p", "command_palette", "Command palette", tooltip="Search every action of this screen"),
    Binding("ctrl+q", "quit", "Quit", tooltip="Quit (cancels a running benchmark first)"),
)


def _key(app: "App", key: str) -> str:
    return "?" if key == "question_mark" else app.get_key_display(Binding(key, ""))


def _ours(node: object, action: str) -> bool:
    """The action is implemented by imgtui (not one of Textual's generic ones: focus, copy, a
    DataTable's cursor keys), so it belongs in imgtui's help and palette."""
    name = f"action_{action}"
    for cls in type(node).__mro__:
        if name in vars(cls):
            return cls.__module__.startswith("imgtui.")
    return False


def screen_bindings(screen: "Screen", *, include_hidden: bool = True) -> list[tuple[object, Binding, list[str]]]:
    """(node, binding, keys) for every action bound on ``screen`` now (focused widget first, then the
    screen, then the app), one entry per action with all its keys. Disabled actions are kept
    (help lists them) unless their ``check_action`` hides them."""
    app = screen.app
    found: dict[tuple[int, str], tuple[object, Binding, list[str]]] = {}
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if not include_hidden and not binding.show:
            continue
        if binding.action in ("command_palette", "quit") or not _ours(active.node, binding.action):
            continue
        entry = found.setdefault((id(active.node), binding.action), (active.node, binding, []))
        shown = _key(app, key)
        if shown not in entry[2]:
            entry[2].append(shown)
    return list(found.values())


def help_rows(screen: "Screen") -> list[tuple[str, str]]:
    """(keys, description) rows for the help screen of ``screen``."""
    rows = [(" / ".join(keys), binding.tooltip or binding.description) for _n, binding, keys in screen_bindings(screen)]
    rows += [(_key(screen.app, b.key), b.tooltip or b.description) for b in FIXED_KEYS]
    return rows


def screen_commands(screen: "Screen") -> Iterable[SystemCommand]:
    """Palette entries for the actions bound on ``screen`` (title: the binding's description)."""
    for node, binding, keys in screen_bindings(screen):
        if not binding.description or binding.action in ("help",):
            continue
        help_text = f"{binding.tooltip or binding.description} ({' / '.join(keys)})"
        yield SystemCommand(binding.description, help_text, partial(screen.app.run_action, binding.action, node))
