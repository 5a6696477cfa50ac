"""HAProxy's own /status page (#15 item 5), shown while no API node is alive: it checks again
by itself without a meta refresh (axe-core's critical `meta-refresh`: a reload every 30 s
under a screen reader), through an inline script HAProxy's answer lets run, and offers a
"check again" link for readers without scripts, in both of its languages."""

from __future__ import annotations

import re

from haproxy_text import sections
from unit_fakes import HAPROXY_TLS

from deploy import configgen
from deploy.state import DEFAULT_TOPOLOGY
from deploy.topology import load_topology

PAGE = configgen.STATUS_FALLBACK_PAGE.read_text()


def test_the_page_checks_again_without_a_meta_refresh() -> None:
    """No `<meta http-equiv=refresh>`; a script asks /status again and moves there once a node
    answers it (not this page again)."""
    assert not re.search(r"http-equiv\s*=\s*[\"']?refresh", PAGE, re.IGNORECASE)
    (script,) = re.findall(r"<script>(.*?)</script>", PAGE, re.DOTALL)
    assert 'fetch("/status"' in script
    assert 'location.assign("/status")' in script
    marker = re.search(r'data-fallback="([^"]+)"', PAGE)
    assert marker is not None
    assert marker.group(0) in script


def test_a_check_again_link_in_each_language() -> None:
    """Without scripts a reader follows a link to /status, in English and Traditional
    Chinese like the rest of the page."""
    links = re.findall(r'<a href="/status"([^>]*)>([^<]+)</a>', PAGE)
    assert {(attrs.strip(), text) for attrs, text in links} == {
        ('id="check-again"', "Check again now"),
        ('lang="zh-Hant"', "立即重新檢查"),
    }


def test_haproxys_answer_lets_the_inline_script_run() -> None:
    """HAProxy answers the file with no Content-Security-Policy (the nodes' pages carry one
    that forbids inline scripts; this answer is HAProxy's, not theirs)."""
    text = configgen.haproxy_config(load_topology(DEFAULT_TOPOLOGY), HAPROXY_TLS)
    (line,) = [
        x for x in sections(text)["frontend api"] if str(configgen.STATUS_FALLBACK_PAGE) in x
    ]
    assert "Content-Security-Policy" not in text
    assert line.startswith("http-request return status 200 ")
