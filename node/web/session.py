"""Web sessions: the account's API key, exchanged at sign-in for a session cookie.

The cookie is the session itself, sealed with Fernet (AES-CBC + HMAC-SHA256, the
`cryptography` package): nothing is kept on the server, so a session works on either node
(given the same secret file, `NodeConfig.web_session_key_file`), with Redis down and with
PostgreSQL down. It carries the API key so that every page request authenticates exactly as
an API request does (node.auth.account_for_key: the key cache while the database is down,
suspension within seconds, the account's rate limit): the web channel has no rules of its own.
A client cannot read or alter what is sealed; the cookie is HttpOnly, SameSite=Strict, Secure
when the request came over TLS (directly or through HAProxy's X-Forwarded-Proto).

Expiry: a session ends after IDLE without a request (Fernet's timestamp is the last re-seal,
renewed at most every RESEAL_AFTER) and ABSOLUTE after sign-in, whatever its use. Sign-out
clears the cookie; a copy taken before then stays usable until it goes idle (no server-side
revocation list: Redis may be down, and the sign-in must not depend on it).

Every visitor, signed in or not, has a CSRF token in the session; every form carries it and
every POST is refused unless it matches (`check_csrf`), and unless the browser says the request
came from this site (Sec-Fetch-Site / Origin).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("rocars.web")

COOKIE = "rocars_session"
IDLE_S = 30 * 60
ABSOLUTE_S = 12 * 3600
RESEAL_AFTER_S = 60
# Bundles a trucker made in this session, listed on their page (newest first).
MAX_BUNDLES = 10
# CCRNs a trucker scanned (each QR code opens /trucker?ccrn=...) and has not bundled yet; a
# truck's load fits well within this, and the cookie stays small.
MAX_SCANNED = 50
_VERSION = 1


@dataclass(frozen=True)
class Session:
    """One browser's session. `key` None: a visitor not signed in (it still has a CSRF token,
    for the sign-in form)."""

    csrf: str
    key: str | None = None
    kind: str | None = None
    name: str | None = None
    signed_in_at: float = 0.0
    bundles: tuple[int, ...] = ()
    scanned: tuple[str, ...] = ()
    # Not sealed: whether the cookie must be written again with this response.
    dirty: bool = field(default=False, compare=False)

    @classmethod
    def anonymous(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(24), dirty=True)

    def signed_in(self, key: str, kind: str, name: str, now: float) -> Session:
        """A new session for the account (new CSRF token: nothing of the visitor's carries
        over, so a token planted before sign-in is worthless after it)."""
        return Session(
            csrf=secrets.token_urlsafe(24),
            key=key,
            kind=kind,
            name=name,
            signed_in_at=now,
            dirty=True,
        )

    def with_bundle(self, bundle_id: int) -> Session:
        ids = (bundle_id, *(b for b in self.bundles if b != bundle_id))[:MAX_BUNDLES]
        return replace(self, bundles=ids, dirty=True)

    def with_scanned(self, ccrn: str) -> Session:
        """`ccrn` added to the scanned ones, in scan order (once; the oldest give way past
        MAX_SCANNED)."""
        if ccrn in self.scanned:
            return self
        return replace(self, scanned=(*self.scanned, ccrn)[-MAX_SCANNED:], dirty=True)

    def without_scanned(self, *ccrns: str) -> Session:
        kept = tuple(c for c in self.scanned if c not in ccrns)
        return self if kept == self.scanned else replace(self, scanned=kept, dirty=True)


def secret_from(path: Path | None) -> bytes:
    """The session secret: the file's bytes, or a random one for this process."""
    if path is not None:
        data = path.read_bytes().strip()
        if len(data) < 16:
            raise ValueError(f"{path}: a web session secret needs at least 16 bytes")
        return data
    log.warning(
        "no web_session_key_file: web sessions use a secret of this process only",
        extra={"event": "web_session_secret_ephemeral"},
    )
    return secrets.token_bytes(32)


class SessionCodec:
    """Seals sessions into cookie values and opens them again."""

    def __init__(self, secret: bytes) -> None:
        # A key of its own for sessions, whatever else the secret file's bytes might serve.
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"rocars web session v1"
        ).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, session: Session, now: float) -> str:
        doc = {
            "v": _VERSION,
            "csrf": session.csrf,
            "key": session.key,
            "kind": session.kind,
            "name": session.name,
            "at": session.signed_in_at,
            "b": list(session.bundles),
            "s": list(session.scanned),
        }
        return self._fernet.encrypt_at_time(json.dumps(doc).encode(), int(now)).decode()

    def open(self, token: str, now: float) -> Session | None:
        """The session sealed in `token`, or None when it is forged, idle too long or too old."""
        try:
            raw = self._fernet.decrypt_at_time(token.encode(), IDLE_S, int(now))
            doc = json.loads(raw)
            if doc["v"] != _VERSION:
                return None
            s = Session(
                csrf=str(doc["csrf"]),
                key=doc["key"],
                kind=doc["kind"],
                name=doc["name"],
                signed_in_at=float(doc["at"]),
                bundles=tuple(int(b) for b in doc["b"]),
                # Absent from a cookie sealed before scans were kept (a rolling upgrade).
                scanned=tuple(str(c) for c in doc.get("s", ())),
            )
        except (InvalidToken, ValueError, KeyError, TypeError, UnicodeError):
            return None
        if s.key is not None and now - s.signed_in_at > ABSOLUTE_S:
            return None
        return s

    def sealed_at(self, token: str) -> float | None:
        try:
            return float(self._fernet.extract_timestamp(token.encode()))
        except InvalidToken:
            return None


SESSIONS = web.AppKey("web_sessions", SessionCodec)
# The request's session, once read (`current`), and the clock that read it.
_CURRENT = web.RequestKey("rocars.web_session", Session)


def now_s() -> float:
    return time.time()


def current(request: web.Request) -> Session:
    """The request's session: its cookie's if valid, else a new anonymous one."""
    known: Session | None = request.get(_CURRENT)
    if known is not None:
        return known
    token = request.cookies.get(COOKIE)
    opened = None
    if token:
        codec = request.app[SESSIONS]
        opened = codec.open(token, now_s())
        if opened is not None:
            sealed = codec.sealed_at(token)
            if sealed is None or now_s() - sealed >= RESEAL_AFTER_S:
                opened = replace(opened, dirty=True)  # renew its idle deadline
    s = opened if opened is not None else Session.anonymous()
    request[_CURRENT] = s
    return s


def set_current(request: web.Request, session: Session) -> None:
    request[_CURRENT] = replace(session, dirty=True)


def over_tls(request: web.Request) -> bool:
    """The browser reached us over TLS: directly, or through HAProxy terminating it."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or proto == "https"


def write_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Seal the request's session into the response when it changed or needs renewing."""
    s = request.get(_CURRENT)
    if s is None or not s.dirty:
        return
    response.set_cookie(
        COOKIE,
        request.app[SESSIONS].seal(s, now_s()),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=over_tls(request),
    )


def end(request: web.Request, response: web.StreamResponse) -> None:
    """Sign-out: the cookie is removed and the request holds an anonymous session."""
    request[_CURRENT] = Session.anonymous()
    response.del_cookie(COOKIE, path="/")


CSRF_FIELD = "csrf"


class CsrfRefused(Exception):
    """A POST without this session's CSRF token, or sent from another site."""


def _cross_site(request: web.Request) -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = origin.split("://", 1)[-1]
    return host != request.host


def check_csrf(request: web.Request, given: str | None) -> None:
    """Raise CsrfRefused unless `given` is this session's token and the request is same-site."""
    if _cross_site(request):
        raise CsrfRefused("the form was sent from another site")
    expected = current(request).csrf
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfRefused("the form's security token does not match this session")
