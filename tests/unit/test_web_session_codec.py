"""The web session cookie's seal (#15 item 1): forged, altered, idle or too old sessions are
no sessions; a session sealed on one node opens on another with the same secret only."""

from __future__ import annotations

from node.web.session import ABSOLUTE_S, IDLE_S, Session, SessionCodec

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_900_000_000.0


def _signed_in() -> Session:
    return Session.anonymous().signed_in("rk_abcdef01_key", "trader", "Trader One", T0)


def test_a_sealed_session_opens_with_the_same_secret_only() -> None:
    """Both nodes share the secret file: either opens the other's cookie; another secret
    (another cluster, a rotated secret) does not."""
    s = _signed_in()
    token = SessionCodec(SECRET).seal(s, T0)
    opened = SessionCodec(SECRET).open(token, T0 + 1)
    assert opened == s
    assert SessionCodec(b"another secret of enough length").open(token, T0 + 1) is None


def test_the_cookie_does_not_show_the_key() -> None:
    """The API key inside the session is encrypted, not merely signed."""
    token = SessionCodec(SECRET).seal(_signed_in(), T0)
    assert "rk_abcdef01" not in token
    assert "trader" not in token


def test_an_altered_cookie_is_no_session() -> None:
    """Any change to the sealed value is detected."""
    codec = SessionCodec(SECRET)
    token = codec.seal(_signed_in(), T0)
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    assert codec.open(flipped, T0) is None
    assert codec.open("not a token", T0) is None


def test_a_session_idle_too_long_ends() -> None:
    """Idle expiry: a cookie not renewed for IDLE_S seconds no longer opens; renewed (sealed
    again) it lives on."""
    codec = SessionCodec(SECRET)
    s = _signed_in()
    token = codec.seal(s, T0)
    assert codec.open(token, T0 + IDLE_S - 5) is not None
    assert codec.open(token, T0 + IDLE_S + 5) is None
    renewed = codec.seal(s, T0 + IDLE_S - 5)
    assert codec.open(renewed, T0 + IDLE_S + 5) is not None


def test_a_session_ends_after_its_absolute_lifetime_however_used() -> None:
    """Absolute expiry: renewing a session keeps it idle-fresh, never past ABSOLUTE_S after
    sign-in."""
    codec = SessionCodec(SECRET)
    s = _signed_in()
    late = T0 + ABSOLUTE_S + 10
    assert codec.open(codec.seal(s, late - 1), late) is None
    assert codec.open(codec.seal(s, T0 + ABSOLUTE_S - 100), T0 + ABSOLUTE_S - 50) is not None


def test_signing_in_gives_a_new_csrf_token() -> None:
    """A token known before sign-in (planted by someone else) is worthless after it."""
    visitor = Session.anonymous()
    assert visitor.signed_in("k", "trader", "n", T0).csrf != visitor.csrf
