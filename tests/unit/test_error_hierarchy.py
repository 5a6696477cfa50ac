"""kernel.errors: one exception hierarchy, so callers catch the project's types only."""

from __future__ import annotations

import pytest

from kernel import errors
from kernel.errors import (
    ComponentUnavailable,
    DatabaseReadOnly,
    DatabaseUnavailable,
    InvalidInput,
    RocarsError,
)

# Each class and the one it must be caught as (the HTTP status table keys on these).
PARENTS = {
    errors.ConfigError: RocarsError,
    errors.InvalidInput: RocarsError,
    errors.InvalidTransition: RocarsError,
    errors.ComponentUnavailable: RocarsError,
    errors.EtcdUnavailable: ComponentUnavailable,
    errors.PatroniUnavailable: ComponentUnavailable,
    errors.RedisUnavailable: ComponentUnavailable,
    errors.DatabaseUnavailable: ComponentUnavailable,
    errors.DatabaseReadOnly: DatabaseUnavailable,
    errors.JournalError: RocarsError,
    errors.LaunchError: RocarsError,
    errors.DrillError: RocarsError,
}


@pytest.mark.parametrize(("cls", "parent"), PARENTS.items(), ids=lambda c: c.__name__)
def test_every_error_has_its_documented_parent(
    cls: type[RocarsError], parent: type[RocarsError]
) -> None:
    """Each error derives directly from the class it is documented under, so an `except
    ComponentUnavailable` (503) catches every outage and nothing else."""
    assert cls.__bases__ == (parent,)


def test_every_error_in_the_module_is_listed() -> None:
    """No error class is added to the module without a place in the hierarchy above."""
    declared = {
        v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)
    }
    assert declared == set(PARENTS) | {RocarsError}
    assert RocarsError.__bases__ == (Exception,)


def test_a_read_only_database_is_an_outage_not_an_input_error() -> None:
    """A refused write on a demoted primary is caught as unavailable (retry), never as 4xx."""
    with pytest.raises(ComponentUnavailable):
        raise DatabaseReadOnly("pg-A is a replica now")
    assert not issubclass(DatabaseReadOnly, (InvalidInput, errors.InvalidTransition))


def test_invalid_input_names_the_field_and_keeps_the_message() -> None:
    """InvalidInput carries the offending field for the 422 problem (promise I5); without one
    it blames the body."""
    exc = InvalidInput("must be 1-64 characters", field="vrn")
    assert (str(exc), exc.field) == ("must be 1-64 characters", "vrn")
    assert InvalidInput("not JSON").field == "body"


def test_invalid_input_field_is_keyword_only() -> None:
    """The field cannot be passed positionally, so a message is never mistaken for a field."""
    with pytest.raises(TypeError):
        InvalidInput("bad", "vrn")  # type: ignore[call-arg]
