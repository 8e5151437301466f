"""The imgtui dark and light themes (registered by the app; the built-in theme picker lists them)."""

from __future__ import annotations

from textual.theme import Theme

DARK = "imgtui-dark"
LIGHT = "imgtui-light"

IMGTUI_DARK = Theme(
    name=DARK,
    primary="#4FA3E0",
    secondary="#7C6FD6",
    accent="#F0A040",
    warning="#F0A040",
    error="#E0566B",
    success="#5BC77F",
    foreground="#DDE3EA",
    background="#12161C",
    surface="#1A2029",
    panel="#232B36",
    dark=True,
)

IMGTUI_LIGHT = Theme(
    name=LIGHT,
    primary="#1D6FB8",
    secondary="#5A4FB0",
    accent="#B86A0E",
    warning="#B86A0E",
    error="#C0324A",
    success="#2E8B4E",
    foreground="#1F2933",
    background="#F4F6F8",
    surface="#FFFFFF",
    panel="#E3E8EE",
    dark=False,
)

THEMES = (IMGTUI_DARK, IMGTUI_LIGHT)


def other_theme(name: str) -> str:
    """The theme the toggle key switches to from ``name``."""
    return LIGHT if name == DARK else DARK
