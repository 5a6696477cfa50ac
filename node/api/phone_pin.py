"""`PUT /v1/accounts/me/phone-pin`: a trucker sets the PIN of the phone channel (issue 16).

Pure rules used: `kernel.domain.phone_pin` (form, scrypt hash). The PIN is stored only as its
scrypt hash with a random salt; setting it clears the wrong-try count and any lock (whoever
holds the account's API key owns the account). The answer and the audit row never carry the PIN.

The write path's idempotency record keeps a fingerprint of the request; a fast hash of a body
holding a 6-digit PIN would give the PIN away to anyone reading that table, so the
fingerprint is taken over the PIN's scrypt under a salt derived from the account instead
(slow, and the same for a repeat of the same request).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from kernel.domain.phone_pin import hash_pin, pin_error
from node.api import common
from node.auth import require
from node.schemas import _Strict, iso
from node.validation import read_model
from node.writes import Conn, run_write

PATH = "/v1/accounts/me/phone-pin"


class PhonePinIn(_Strict):
    """The phone channel's PIN: exactly 6 digits."""

    # The pattern is for the published schema (clients and the fuzzer read the rule there);
    # the validator below checks it first and names the rule in the problem.
    pin: str = Field(pattern=r"^[0-9]{6}$", json_schema_extra={"example": "314159"})

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, v: object) -> object:
        error = pin_error(v)
        if error is not None:
            raise ValueError(error)  # names the rule, never the value
        return v


def _fingerprint_salt(account_id: int) -> bytes:
    return hashlib.sha256(f"rocars phone-pin request {account_id}".encode()).digest()[:16]


async def put_pin(request: web.Request) -> web.Response:
    account = await require(request, "trucker")
    _, body = await read_model(request, PhonePinIn)
    stored = await asyncio.to_thread(hash_pin, body.pin)
    print_ = await asyncio.to_thread(hash_pin, body.pin, _fingerprint_salt(account.id))
    at = common.now(request)

    async def write(conn: Conn) -> tuple[int, dict[str, Any]]:
        await conn.execute(
            "INSERT INTO phone_pins (account_id, pin_hash, failed, locked_until, updated_at)"
            " VALUES (%s, %s, 0, NULL, %s) ON CONFLICT (account_id) DO UPDATE SET"
            " pin_hash = EXCLUDED.pin_hash, failed = 0, locked_until = NULL,"
            " updated_at = EXCLUDED.updated_at",
            (account.id, stored, at),
        )
        out = {"account_id": account.id, "phone_pin": "set", "updated_at": iso(at)}
        await common.audit(
            conn,
            actor=account.actor,
            action="account.phone_pin",
            subject=f"account:{account.id}",
            after=out,
        )
        return 200, out

    return await run_write(request, account, print_.encode(), write)


def add_routes(app: web.Application) -> None:
    app.router.add_put(PATH, put_pin)
