-- rocars schema v1. Rules that must hold under concurrency live here as constraints, not only
-- in Python: unique CCRN, one open bundle per CCRN, idempotency keys per account.

CREATE SEQUENCE ccrn_seq START 1;

CREATE TABLE accounts (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('trader', 'trucker', 'officer', 'sre')),
    trader_kind  text CHECK (trader_kind IN ('shipper', 'forwarder', 'agent')),
    name         text NOT NULL,
    brn          text,
    contact      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    key_prefix   text NOT NULL UNIQUE,
    key_hash     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE registrations (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('trader', 'trucker')),
    trader_kind  text CHECK (trader_kind IN ('shipper', 'forwarder', 'agent')),
    name         text NOT NULL,
    brn          text NOT NULL,
    contact      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'rejected')),
    reason       text,
    decided_by   bigint REFERENCES accounts (id),
    decided_at   timestamptz,
    account_id   bigint REFERENCES accounts (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE consignments (
    ccrn                text PRIMARY KEY CHECK (ccrn ~ '^[0-9]{16}$'),
    owner_id            bigint NOT NULL REFERENCES accounts (id),
    direction           text NOT NULL CHECK (direction IN ('import', 'export')),
    lbcp                text NOT NULL,
    package_count       integer NOT NULL CHECK (package_count BETWEEN 1 AND 999999),
    package_description text NOT NULL,
    article_description text NOT NULL,
    consignor_name      text NOT NULL,
    consignor_address   text NOT NULL,
    consignee_name      text NOT NULL,
    consignee_address   text NOT NULL,
    expected_at         timestamptz NOT NULL,
    itfs                jsonb,
    status              text NOT NULL DEFAULT 'submitted'
                        CHECK (status IN ('submitted', 'bundled', 'cleared', 'detained', 'cancelled')),
    version             integer NOT NULL DEFAULT 1,
    last_changed_at     timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    selected            boolean NOT NULL DEFAULT false,
    selection_reasons   jsonb NOT NULL DEFAULT '[]'::jsonb,
    override            jsonb,
    lbcp_outcome        text CHECK (lbcp_outcome IN ('released', 'inspected')),
    airport_inspected   boolean NOT NULL DEFAULT false,
    late                boolean NOT NULL DEFAULT false,
    -- Drawn once per consignment so random selection cannot be re-rolled by amending.
    risk_draw           double precision NOT NULL CHECK (risk_draw >= 0 AND risk_draw < 1)
);
CREATE INDEX consignments_owner ON consignments (owner_id, created_at, ccrn);
CREATE INDEX consignments_selected ON consignments (lbcp) WHERE selected AND status <> 'cancelled';

CREATE TABLE consignment_versions (
    ccrn        text NOT NULL REFERENCES consignments (ccrn),
    version     integer NOT NULL,
    data        jsonb NOT NULL,
    changed_at  timestamptz NOT NULL,
    changed_by  bigint NOT NULL REFERENCES accounts (id),
    PRIMARY KEY (ccrn, version)
);

CREATE TABLE bundles (
    id          bigserial PRIMARY KEY,
    trucker_id  bigint NOT NULL REFERENCES accounts (id),
    vrn         text NOT NULL,
    lbcp        text NOT NULL,
    empty       boolean NOT NULL DEFAULT false,
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'inspecting', 'closed', 'cancelled')),
    not_before  timestamptz NOT NULL,
    selected    boolean NOT NULL DEFAULT false,
    reasons     jsonb NOT NULL DEFAULT '[]'::jsonb,
    outcome     text CHECK (outcome IN ('released', 'inspected')),
    created_at  timestamptz NOT NULL,
    closed_at   timestamptz
);
-- One truck at one boundary point has at most one bundle in progress.
CREATE UNIQUE INDEX bundles_one_active_per_vrn
    ON bundles (lbcp, vrn) WHERE status IN ('open', 'inspecting');

CREATE TABLE bundle_items (
    bundle_id   bigint NOT NULL REFERENCES bundles (id),
    ccrn        text NOT NULL REFERENCES consignments (ccrn),
    active      boolean NOT NULL DEFAULT true,
    PRIMARY KEY (bundle_id, ccrn)
);
-- A CCRN is in at most one bundle that is still open or being inspected.
CREATE UNIQUE INDEX bundle_items_one_active_bundle ON bundle_items (ccrn) WHERE active;

CREATE TABLE idempotency_keys (
    account_id    bigint NOT NULL REFERENCES accounts (id),
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status        integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE risk_rules (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL
                CHECK (kind IN ('keyword', 'pattern', 'consignor', 'consignee', 'vrn', 'random')),
    value       text NOT NULL,
    lbcp        text,
    active      boolean NOT NULL DEFAULT true,
    created_by  bigint NOT NULL REFERENCES accounts (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE arrivals (
    id          bigserial PRIMARY KEY,
    lbcp        text NOT NULL,
    vrn         text NOT NULL,
    bundle_id   bigint REFERENCES bundles (id),
    decision    text NOT NULL CHECK (decision IN ('release', 'inspect', 'hold', 'manual')),
    reason      text NOT NULL,
    until       timestamptz,
    officer_id  bigint NOT NULL REFERENCES accounts (id),
    at          timestamptz NOT NULL
);

CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    subject   text NOT NULL,
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_log_subject ON audit_log (subject, id);
