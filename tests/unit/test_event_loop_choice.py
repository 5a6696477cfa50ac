"""The node runs on uvloop unless its configuration says "asyncio" (#11 target 1: uvloop's
transports cost the node less CPU per request than asyncio's, measured by `make bench`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop
from pydantic import ValidationError
from unit_fakes import node_config

from deploy.cli import _event_loop


@pytest.mark.parametrize(("kind", "expected"), [("uvloop", uvloop.Loop), ("asyncio", None)])
def test_the_configured_loop_is_the_one_built(kind: str, expected: type | None) -> None:
    """ "uvloop" builds uvloop's loop; "asyncio" the standard library's (the fallback)."""
    loop = _event_loop(kind)
    try:
        if expected is None:
            assert not isinstance(loop, uvloop.Loop)
            assert isinstance(loop, asyncio.AbstractEventLoop)
        else:
            assert isinstance(loop, expected)
    finally:
        loop.close()


def test_uvloop_is_the_default_and_other_names_are_refused(tmp_path: Path) -> None:
    """A node configuration without `event_loop` runs uvloop; a name that is neither is a
    configuration error, not a silent fallback."""
    assert node_config(tmp_path).event_loop == "uvloop"
    with pytest.raises(ValidationError):
        node_config(tmp_path).model_validate(
            {**node_config(tmp_path).model_dump(), "event_loop": "trio"}
        )
