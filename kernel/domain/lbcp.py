"""Land boundary control points (LBCPs) and Hong Kong time.

The code -> name mapping here is the configuration default; a deployment may configure its own,
so rules that need "is this a known LBCP" take the mapping as an argument.
Times are stored in UTC and shown in Hong Kong time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

# Read-only so no caller can change the default for everyone else by accident.
DEFAULT_LBCPS: Mapping[str, str] = MappingProxyType(
    {
        "LMC": "Lok Ma Chau (Huanggang)",
        "MKT": "Man Kam To",
        "STK": "Sha Tau Kok",
        "SBC": "Shenzhen Bay",
        "HYW": "Heung Yuen Wai",
        "HZMB": "Hong Kong-Zhuhai-Macao Bridge",
    }
)

# Hong Kong has kept UTC+8 without daylight saving since 1979, so a fixed offset is exact for
# every time this system handles and needs no tz database on the host.
HK_TZ = timezone(timedelta(hours=8), "HKT")


def to_hk(dt: datetime) -> datetime:
    """The same instant expressed in Hong Kong time; naive datetimes are refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("naive datetime: cannot tell which instant it is")
    return dt.astimezone(HK_TZ)


def lbcp_name(code: str, lbcps: Mapping[str, str] = DEFAULT_LBCPS) -> str:
    """The display name of an LBCP code; KeyError naming the code when it is unknown."""
    try:
        return lbcps[code]
    except KeyError:
        raise KeyError(f"unknown LBCP code {code!r}") from None
