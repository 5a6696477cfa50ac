"""Vehicle registration mark (VRN) normalisation.

Truckers type the same plate as "ab 1234", "AB-1234" or "AB1234"; bundles, gate look-ups and
watch-lists must all agree it is one truck, so every VRN is stored in one canonical form:
separators removed, upper case, 1-8 characters of A-Z and 0-9.
"""

from __future__ import annotations

MAX_VRN_LENGTH = 8

_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def normalise_vrn(text: str) -> str:
    """The canonical VRN for ``text``; ValueError with a message when it cannot be one."""
    # Any whitespace (tabs, no-break spaces pasted from documents) counts as a separator.
    compact = "".join(ch for ch in text if ch != "-" and not ch.isspace())
    if not compact:
        raise ValueError("VRN is empty")
    # Check the character set before upper-casing: str.upper() maps some non-ASCII letters
    # onto ASCII ones ("ı" -> "I", "ſ" -> "S", "ß" -> "SS"), which would let look-alikes in.
    bad = next((ch for ch in compact if ch not in _ALLOWED), None)
    if bad is not None:
        raise ValueError(f"VRN may contain only letters A-Z and digits 0-9; found {bad!r}")
    if len(compact) > MAX_VRN_LENGTH:
        raise ValueError(
            f"VRN must be at most {MAX_VRN_LENGTH} letters and digits, got {len(compact)}"
        )
    return compact.upper()
