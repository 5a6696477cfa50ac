"""Signing in to the web pages of the in-process node, as a browser does: read a form's CSRF
token, then post the sign-in form with an account's key. Test modules import these by name."""

from __future__ import annotations

import re

from handler_fakes import Fakes
from problem_checks import Client

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def csrf(client: Client, path: str = "/") -> str:
    """The CSRF token of the form on `path` (which must answer 200)."""
    r = await client.get(path)
    assert r.status == 200, await r.text()
    m = CSRF.search(await r.text())
    assert m is not None
    return m.group(1)


async def sign_in(client: Client, fakes: Fakes, kind: str) -> str:
    """Signs in with the fakes' key of `kind`; returns where the sign-in sent the browser."""
    token = await csrf(client)
    r = await client.post(
        "/signin", data={"csrf": token, "api_key": fakes.keys[kind]}, allow_redirects=False
    )
    assert r.status == 303, await r.text()
    return r.headers["Location"]
