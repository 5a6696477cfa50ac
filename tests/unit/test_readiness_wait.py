"""deploy.readiness.wait_until polls a check until it is true, and gives up with a LaunchError
naming what did not become ready; the check is always awaited, however it is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.readiness import wait_until
from deploy.state import StateDir
from kernel.errors import LaunchError


async def _never() -> bool:
    return False


async def test_a_check_written_as_a_lambda_is_awaited_not_taken_as_true(tmp_path: Path) -> None:
    """A lambda returning a coroutine (not itself a coroutine function) that never comes true
    times out: tenacity alone would have counted the coroutine object as a success."""
    with pytest.raises(LaunchError, match="the thing did not become ready"):
        await wait_until(
            "the thing", lambda: _never(), timeout=0.3, state=StateDir(tmp_path), logs=()
        )


async def test_a_check_that_comes_true_returns(tmp_path: Path) -> None:
    """A check that fails (raises), then is false, then true: wait_until returns."""
    answers = iter([RuntimeError("starting"), False, True])

    async def check() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    await wait_until("it", check, timeout=10, state=StateDir(tmp_path), logs=())
