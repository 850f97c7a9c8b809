"""Tables of the store (`pybuild cache ls`, `images`) show what a hostile Dockerfile named (a cache mount id, a
step's text): control characters in a cell must not reach the terminal as escapes (ESC ]… retitles, ESC [2J clears)."""
from __future__ import annotations

from builder.storecmd import show_table


def test_a_cell_with_control_characters_prints_none_of_them(capsys):
    show_table("cache", ["ID", "DESCRIPTION"], [["cachemount:1", "cache mount id=a\x1b[2Jb\x07\x9b"]])
    out = capsys.readouterr().out
    assert "cache mount id=a?[2Jb??" in out
    assert not any(ord(c) < 32 and c not in "\n" or 0x7f <= ord(c) < 0xa0 for c in out)


def test_a_cell_is_text_not_rich_markup_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    show_table("cache", ["ID", "DESCRIPTION"], [["cachemount:1", "id=[link=http://evil.example/]x[/link] [bold]b"]])
    out = capsys.readouterr().out
    assert "[link=http://evil.example/]x[/link]" in out and "[bold]b" in out  # shown as written, not applied
