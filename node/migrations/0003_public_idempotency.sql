-- Idempotency for the one unauthenticated write (registration): keys are global there, so a
-- retried application returns the first answer instead of creating a second registration.
CREATE TABLE public_idempotency_keys (
    key           text PRIMARY KEY,
    request_hash  text NOT NULL,
    status        integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz
);
