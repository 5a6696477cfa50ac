"""The version a node reports in /health (#17 item 4: `rocars upgrade` checks it after each
restart)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest
from test_health_document import inputs

from monitoring.health import VERSION_OVERRIDE_ENV, code_version, health_document


def test_code_version_is_the_installed_package_unless_overridden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """#17 item 4: the installed rocars version, or $ROCARS_VERSION_OVERRIDE when set."""
    monkeypatch.delenv(VERSION_OVERRIDE_ENV, raising=False)
    assert code_version() == metadata.version("rocars")
    monkeypatch.setenv(VERSION_OVERRIDE_ENV, " 9.9.9+new ")
    assert code_version() == "9.9.9+new"
    monkeypatch.setenv(VERSION_OVERRIDE_ENV, "")
    assert code_version() == metadata.version("rocars")


def test_health_document_reports_the_version() -> None:
    """#17 item 4: /health carries the version the node started with."""
    doc: dict[str, Any] = health_document(inputs(version="1.2.3"))
    assert doc["version"] == "1.2.3"
