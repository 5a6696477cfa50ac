"""Asking the node's own PostgreSQL whether it is the primary, for the role rule while the
local Patroni is silent (failover.role_rule, #14 item 3).

One connection of its own, not one of the pool's: under write load every pooled connection may
be busy, and a probe that waited for one would read as "no answer" exactly when writing on
matters most. Asked only while Patroni is silent, so it costs nothing in normal running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from node.config import NodeConfig

log = logging.getLogger("rocars.role")


class PrimaryProbe:
    def __init__(self, config: NodeConfig, *, timeout_s: float) -> None:
        self._conninfo = config.database.conninfo(application_name=f"rocars-role-{config.site}")
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __call__(self) -> bool | None:
        """True: not in recovery (the primary); False: a standby; None: no answer in time."""
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True
                    )
                cur = await self._conn.execute("SELECT pg_is_in_recovery()")
                row = await cur.fetchone()
        except (TimeoutError, psycopg.Error) as exc:
            log.debug("PostgreSQL did not say whether it is the primary: %r", exc)
            await self.close()
            return None
        return row is not None and not row[0]

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
