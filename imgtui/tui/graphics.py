"""Terminal graphics for record images: Kitty's graphics protocol or Sixel where the terminal has
them (through textual-image), half-block cells everywhere else.

The terminal must be asked before Textual starts (``detect()`` is called by ``run_app``), and only
terminals known to draw pixels are asked (Kitty, WezTerm, iTerm2, Ghostty, foot, Konsole, ...; not
inside tmux/screen). Tests, screenshots and ``IMGTUI_IMAGES=halfblock`` use half blocks;
``IMGTUI_IMAGES=sixel`` or ``kitty`` forces a protocol the terminal does not announce.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: "kitty", "sixel" or "halfblock" once detect() ran; half blocks until then
_KIND = "halfblock"
_WIDGET: Any = None


def kind() -> str:
    return _KIND


def _may_draw_pixels(env: dict) -> bool:
    """Terminals known to draw Kitty or Sixel graphics (asking any other terminal costs about a
    second of timeouts before the first paint, and tmux passes neither through by default)."""
    if env.get("TMUX") or env.get("STY"):
        return False
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    return bool(env.get("KITTY_WINDOW_ID") or env.get("WEZTERM_EXECUTABLE") or env.get("KONSOLE_VERSION")
                or "kitty" in term or term.startswith(("foot", "mlterm", "contour", "wezterm"))
                or program in ("WezTerm", "iTerm.app", "ghostty", "contour") or "ghostty" in term)


def detect(env: dict | None = None) -> str:
    """Ask the terminal what it can draw (once, before the app starts) and remember it."""
    global _KIND, _WIDGET
    env = dict(os.environ) if env is None else env
    wanted = env.get("IMGTUI_IMAGES", "auto").strip().lower()
    if (wanted in ("halfblock", "half", "blocks", "off") or not _is_tty()
            or (wanted == "auto" and not _may_draw_pixels(env))):
        _KIND, _WIDGET = "halfblock", None
        return _KIND
    _KIND, _WIDGET = _query(wanted)
    return _KIND


def _query(wanted: str) -> tuple[str, Any]:
    """Import textual-image (which asks the terminal) and pick its widget for ``wanted``."""
    try:
        from textual_image import widget as tiw
        from textual_image.renderable import Image as Auto, SixelImage, TGPImage
    except Exception:  # not installed, or the terminal query failed: half blocks
        return "halfblock", None
    if wanted == "sixel" or (wanted == "auto" and Auto is SixelImage):
        return "sixel", tiw.SixelImage
    if wanted == "kitty" or (wanted == "auto" and Auto is TGPImage):
        return "kitty", tiw.TGPImage
    return "halfblock", None


def _is_tty() -> bool:
    return bool(sys.__stdout__ and sys.__stdout__.isatty())


def image_widget(**kwargs: Any) -> Any | None:
    """A textual-image widget for the detected protocol, or None (use half blocks)."""
    return _WIDGET(**kwargs) if _WIDGET is not None else None
