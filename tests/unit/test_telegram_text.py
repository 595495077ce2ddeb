"""Telegram text: HTML escaping, UTF-16 length, splitting under 4096 units, token loading."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import pytest

from agent.notify.telegram import (
    MAX_UNITS,
    escape,
    header,
    load_token,
    render_parts,
    split_text,
    utf16_len,
)

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def plain(part: str, host: str) -> str:
    """What a Telegram client shows for one HTML part, minus the header."""
    body = part.removeprefix(header(host))
    assert "<" not in body and ">" not in body  # no markup besides the header
    return html.unescape(body)


def test_utf16_len_counts_astral_emoji_twice() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len("\U0001F534") == 2  # red circle, outside the BMP
    assert utf16_len("é€") == 2


def test_escape_covers_the_three_html_characters() -> None:
    assert escape("<web&api> \"q\" 'a'") == "&lt;web&amp;api&gt; \"q\" 'a'"


def test_short_text_is_one_part_with_the_host_in_bold() -> None:
    [part] = render_parts("CRIT: <web&api> down", "vm-1")
    assert part == "<b>vm-1</b>\nCRIT: &lt;web&amp;api&gt; down"


def test_host_name_is_escaped_too() -> None:
    assert render_parts("x", "a<b")[0].startswith("<b>a&lt;b</b>\n")


@pytest.mark.parametrize("line", ["\U0001F534 emoji line", "<tag> & more >", "plain words"])
def test_long_text_splits_on_lines_under_the_limit(line: str) -> None:
    lines = [f"{i:04d} {line}" for i in range(900)]
    parts = render_parts("\n".join(lines), "vm-1")
    assert len(parts) > 1
    assert all(utf16_len(p) <= MAX_UNITS for p in parts)
    assert all(p.startswith("<b>vm-1</b>\n") for p in parts)
    rebuilt = [ln for p in parts for ln in plain(p, "vm-1").split("\n")]
    assert rebuilt == lines  # every line whole, in order, none lost or doubled


def test_a_single_huge_line_is_cut_without_breaking_entities_or_surrogates() -> None:
    text = ("&<\U0001F600>" * 3000)  # 15000 UTF-16 units escaped
    parts = render_parts(text, "h")
    assert all(utf16_len(p) <= MAX_UNITS for p in parts)
    for p in parts:  # every & starts a whole entity
        body = p.removeprefix(header("h"))
        assert re.fullmatch(r"(?:&amp;|&lt;|&gt;|\U0001F600)+", body)
    assert "".join(plain(p, "h") for p in parts) == text


def test_split_budget_is_in_escaped_units() -> None:
    parts = split_text("&" * 20, 10)  # each & escapes to 5 units: 2 per part
    assert parts == ["&&"] * 10


def test_empty_text_is_one_empty_part() -> None:
    assert split_text("", 100) == [""]


def test_token_from_credential_first(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "telegram-token").write_text(TOKEN + "\n")
    other = tmp_path / "token"
    other.write_text("987:BBBBBBBBBBBBBBBBBBBBBBB")
    assert load_token(str(other), credentials_dir=str(creds)) == TOKEN
    assert load_token(str(other), credentials_dir=str(tmp_path / "none")) == (
        "987:BBBBBBBBBBBBBBBBBBBBBBB")
    assert load_token("", credentials_dir="") is None


def test_malformed_token_is_ignored_and_never_logged(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "token"
    bad.write_text("not a token " + TOKEN[:20])
    with caplog.at_level(logging.DEBUG):
        assert load_token(str(bad), credentials_dir="") is None
    assert "malformed" in caplog.text and TOKEN[:20] not in caplog.text
