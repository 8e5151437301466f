"""Terminal graphics choice: half blocks unless a pixel-capable terminal is known (other terminals
are not asked: the question costs about a second of timeouts before the first paint)."""

from __future__ import annotations

import pytest

from imgtui.tui import graphics


class _Widget:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


@pytest.fixture
def asked(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(graphics, "_is_tty", lambda: True)
    monkeypatch.setattr(graphics, "_query", lambda wanted: calls.append(wanted) or ("sixel", _Widget))
    yield calls
    graphics._KIND, graphics._WIDGET = "halfblock", None


@pytest.mark.parametrize("env", [
    {"TERM": "xterm-256color"},
    {"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"},  # tmux passes no graphics through
    {"TERM": "xterm-kitty", "IMGTUI_IMAGES": "halfblock"},
    {"TERM_PROGRAM": "WezTerm", "IMGTUI_IMAGES": "off"},
])
def test_half_blocks_without_asking_the_terminal(env, asked):
    assert graphics.detect(env) == "halfblock"
    assert asked == []
    assert graphics.image_widget(id="x") is None


@pytest.mark.parametrize("env", [{"TERM": "xterm-kitty"}, {"KITTY_WINDOW_ID": "1"}, {"TERM_PROGRAM": "WezTerm"},
                                 {"TERM_PROGRAM": "iTerm.app"}, {"TERM": "foot"}, {"KONSOLE_VERSION": "230800"},
                                 {"TERM": "xterm-256color", "IMGTUI_IMAGES": "sixel"}])
def test_pixel_terminals_are_asked_and_get_the_protocol_widget(env, asked):
    assert graphics.detect(env) == "sixel"
    assert asked == [env.get("IMGTUI_IMAGES", "auto")]
    widget = graphics.image_widget(id="image-gfx")
    assert isinstance(widget, _Widget) and widget.kwargs == {"id": "image-gfx"}


def test_not_a_terminal_is_half_blocks(monkeypatch):
    monkeypatch.setattr(graphics, "_is_tty", lambda: False)
    assert graphics.detect({"TERM": "xterm-kitty"}) == "halfblock"
