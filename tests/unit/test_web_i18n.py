"""The web pages' languages (#15): Accept-Language is read with its q-values, the switch's
cookie wins, and every text the templates and page modules show has a Traditional Chinese
translation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.web import i18n

WEB = Path(i18n.__file__).parent
# _("text") in templates and page modules, and the texts page modules pass on by name.
_CALL = re.compile(r'_\(\s*"((?:[^"\\]|\\.)+)"\s*\)')
_NAMED = re.compile(r'^\s*"[a-z_]+": "([A-Z][^"]+[.])",?$', re.MULTILINE)


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, None),
        ("", None),
        ("en-GB,en;q=0.9", "en"),
        ("zh-HK,zh;q=0.9,en;q=0.8", "zh-Hant"),
        ("zh-Hant-TW", "zh-Hant"),
        ("zh-CN,zh;q=0.9", "zh-Hant"),
        ("zh-CN", None),
        ("fr-FR,en;q=0.3,zh-TW;q=0.5", "zh-Hant"),
        ("en;q=0.9,zh-HK", "zh-Hant"),
        ("zh-HK;q=0,en", "en"),
        ("de, fr", None),
        ("en;q=abc", None),
    ],
)
def test_accept_language_picks_the_best_offered_language(header: str | None, lang: str) -> None:
    """q-values rank the tags; Simplified Chinese tags are not taken for Traditional."""
    assert i18n.parse_accept_language(header) == lang


def test_the_switch_wins_over_the_header_and_english_is_the_default() -> None:
    assert i18n.choose("en", "zh-HK") == "en"
    assert i18n.choose("zh-Hant", "en") == "zh-Hant"
    assert i18n.choose("klingon", "zh-HK") == "zh-Hant"
    assert i18n.choose(None, None) == "en"


def _texts() -> set[str]:
    found: set[str] = set()
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        if path.name == "i18n.py":
            continue
        text = path.read_text()
        found.update(_CALL.findall(text))
        if path.suffix == ".py":
            found.update(_NAMED.findall(text))
    return found


def test_every_text_shown_has_a_chinese_translation() -> None:
    """A text added to a page without its translation fails here, naming it."""
    texts = _texts()
    assert len(texts) > 50  # the scan finds the pages' texts at all
    missing = sorted(t for t in texts if t not in i18n.ZH_HANT)
    assert missing == []


def test_translations_are_chinese_and_complete() -> None:
    """Every translation is non-empty and contains CJK characters (not left in English)."""
    for english, chinese in i18n.ZH_HANT.items():
        assert chinese.strip(), english
        assert re.search(r"[\u3400-\u9fff]", chinese), english
