"""Request shapes (pydantic), strict: unknown fields rejected, text trimmed and non-blank."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from kernel.domain.vrn import normalise_vrn

# Trimmed, non-blank text of bounded length.
Text8 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8)]
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text500 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Text1000 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Text2000 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Name = Text200
Address = Text500
Count = Annotated[int, Field(strict=True, ge=1, le=999999)]


def _iso_text(v: Any) -> Any:
    # Pydantic also reads numbers (and numeric strings) as Unix timestamps; the API takes only
    # ISO 8601 text, so 1800000000 is a wrong type, not a date.
    if not isinstance(v, str):
        raise ValueError("must be an ISO 8601 date-time string with an offset")
    try:
        datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time with an offset") from None
    return v


# ISO 8601 date-time text with an offset (naive times are refused by AwareDatetime).
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


def unstorable(text: str) -> str | None:
    """Why PostgreSQL would refuse `text` in a text or jsonb column, or None when it would not.

    Only NUL (U+0000) gets this far: lone surrogates (from JSON's "\\ud800" escapes) cannot be
    encoded as UTF-8 either, but pydantic's own str validation already refuses them.
    """
    return "must not contain NUL (U+0000) characters" if "\x00" in text else None


def _unstorable_at(value: Any, loc: tuple[int | str, ...] = ()) -> Iterator[InitErrorDetails]:
    if isinstance(value, str):
        if (why := unstorable(value)) is not None:
            yield InitErrorDetails(
                type=PydanticCustomError("unstorable_text", why), loc=loc, input=value
            )
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _unstorable_at(item, (*loc, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unstorable_at(key, (*loc, str(key)))
            yield from _unstorable_at(item, (*loc, str(key)))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, v: Any) -> Any:
        # Every string of every request model, however deeply nested (list items such as
        # clearance `documents`, nested models validate their own), is checked here once, so a
        # NUL becomes a 422 naming e.g. `documents.2` instead of the driver failing the request
        # with a 500. pydantic-core prefixes the locations of a ValidationError raised here with
        # the field's name.
        errors = list(_unstorable_at(v))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return v


class Itfs(_Strict):
    airport: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3,4}$")] = Field(
        description="IATA/ICAO airport code, e.g. HKG"
    )
    flight: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2}[0-9]{1,4}[A-Z]?$")]


class ConsignmentIn(_Strict):
    direction: Literal["import", "export"]
    lbcp: Text8
    package_count: Count
    package_description: Text500
    article_description: Text2000
    consignor_name: Name
    consignor_address: Address
    consignee_name: Name
    consignee_address: Address
    expected_at: IsoDateTime
    itfs: Itfs | None = None


AMENDABLE = (
    "package_count",
    "package_description",
    "article_description",
    "consignor_name",
    "consignor_address",
    "consignee_name",
    "consignee_address",
    "expected_at",
)


class ConsignmentPatch(_Strict):
    package_count: Count | None = None
    package_description: Text500 | None = None
    article_description: Text2000 | None = None
    consignor_name: Name | None = None
    consignor_address: Address | None = None
    consignee_name: Name | None = None
    consignee_address: Address | None = None
    expected_at: IsoDateTime | None = None

    @field_validator(*AMENDABLE, mode="after")
    @classmethod
    def _not_null(cls, v: Any, info: ValidationInfo) -> Any:
        # Runs only for fields the request names (defaults are not validated), so the error
        # names the field that was sent as null.
        if v is None:
            raise ValueError(f"{info.field_name} cannot be null")
        return v

    @model_validator(mode="after")
    def _something(self) -> ConsignmentPatch:
        if not self.model_fields_set:
            raise ValueError("name at least one of the 8 cargo items to amend")
        return self


class BundleIn(_Strict):
    vrn: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    lbcp: Text8
    ccrns: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=list, max_length=200
    )
    empty: StrictBool = False

    @field_validator("vrn")
    @classmethod
    def _vrn(cls, v: str) -> str:
        return normalise_vrn(v)


class ArrivalIn(_Strict):
    vrn: Annotated[str, StringConstraints(min_length=1, max_length=20)]

    @field_validator("vrn")
    @classmethod
    def _vrn(cls, v: str) -> str:
        return normalise_vrn(v)


class InspectionIn(_Strict):
    result: Literal["cleared", "detained"]
    notes: Text1000 | None = None


class RuleIn(_Strict):
    kind: Literal["keyword", "pattern", "consignor", "consignee", "vrn", "random"]
    value: Text200
    lbcp: Text8 | None = None
    active: StrictBool = True


class RulePatch(_Strict):
    active: StrictBool


class SelectionIn(_Strict):
    action: Literal["select", "release"]
    reason: Text500


class Contact(_Strict):
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{6,20}$")] | None = None


class RegistrationIn(_Strict):
    kind: Literal["trader", "trucker"]
    # Validated even when absent, so a missing trader_kind is reported against that field.
    trader_kind: Literal["shipper", "forwarder", "agent"] | None = Field(
        default=None, validate_default=True
    )
    name: Name
    # Hong Kong business registration number: 8 digits, optionally with a branch suffix.
    brn: Annotated[str, StringConstraints(pattern=r"^[0-9]{8}(-[0-9]{3})?$")]
    contact: Contact

    @field_validator("trader_kind", mode="after")
    @classmethod
    def _trader_kind(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")  # absent when `kind` itself was invalid
        if kind == "trader" and v is None:
            raise ValueError("trader_kind is required for trader registrations")
        if kind == "trucker" and v is not None:
            raise ValueError("trader_kind applies only to trader registrations")
        return v


class DecisionIn(_Strict):
    reason: Text500 | None = None


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None
