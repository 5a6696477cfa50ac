"""LBCP codes and Hong Kong time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.domain.lbcp import DEFAULT_LBCPS, HK_TZ, lbcp_name, to_hk


def test_default_lbcps_are_the_six_control_points() -> None:
    """The default mapping holds exactly the six published LBCP codes and names."""
    assert dict(DEFAULT_LBCPS) == {
        "LMC": "Lok Ma Chau (Huanggang)",
        "MKT": "Man Kam To",
        "STK": "Sha Tau Kok",
        "SBC": "Shenzhen Bay",
        "HYW": "Heung Yuen Wai",
        "HZMB": "Hong Kong-Zhuhai-Macao Bridge",
    }


def test_default_lbcps_are_read_only() -> None:
    """No caller can alter the shared default mapping."""
    with pytest.raises(TypeError):
        DEFAULT_LBCPS["XXX"] = "Nowhere"  # type: ignore[index]


def test_lbcp_name_of_known_code() -> None:
    """A known code gives its display name."""
    assert lbcp_name("HZMB") == "Hong Kong-Zhuhai-Macao Bridge"


def test_lbcp_name_uses_given_mapping() -> None:
    """A configured mapping replaces the default."""
    assert lbcp_name("TST", {"TST": "Test Point"}) == "Test Point"
    with pytest.raises(KeyError, match="LMC"):
        lbcp_name("LMC", {"TST": "Test Point"})


def test_lbcp_name_of_unknown_code() -> None:
    """An unknown code raises KeyError naming it; codes are case-sensitive."""
    with pytest.raises(KeyError, match="'lmc'"):
        lbcp_name("lmc")


def test_to_hk_shifts_utc_by_eight_hours() -> None:
    """16:00 UTC is 00:00 the next day in Hong Kong."""
    hk = to_hk(datetime(2025, 1, 31, 16, 0, tzinfo=UTC))
    assert (hk.year, hk.month, hk.day, hk.hour) == (2025, 2, 1, 0)
    assert hk.utcoffset() == timedelta(hours=8)


def test_to_hk_has_no_daylight_saving() -> None:
    """Summer and winter both map to UTC+8."""
    for month in (1, 7):
        assert to_hk(datetime(2025, month, 1, tzinfo=UTC)).utcoffset() == timedelta(hours=8)


def test_to_hk_refuses_naive() -> None:
    """A naive datetime names no instant, so it is refused."""
    with pytest.raises(ValueError, match="naive"):
        to_hk(datetime(2025, 1, 1, 12, 0))


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from([UTC, HK_TZ, timezone(timedelta(hours=-5))]),
    )
)
def test_to_hk_keeps_the_instant(dt: datetime) -> None:
    """Conversion changes only the displayed zone, never the instant."""
    hk = to_hk(dt)
    assert hk == dt
    assert hk.tzinfo is HK_TZ
