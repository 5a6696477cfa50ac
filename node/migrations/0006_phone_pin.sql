-- The phone channel's PIN (issue 16, kernel.domain.phone_pin.py): its scrypt hash only, never the PIN,
-- and the wrong tries in a row with the lock they lead to, kept here (not per call) so that
-- calling again does not reset them.
CREATE TABLE phone_pins (
    account_id    bigint PRIMARY KEY REFERENCES accounts (id),
    pin_hash      text NOT NULL CHECK (pin_hash LIKE 'scrypt$%'),
    failed        integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    locked_until  timestamptz,
    updated_at    timestamptz NOT NULL
);
