-- Manual clearance records, imported exactly once (by UUID) from the nodes' journals, and
-- audit events written to a journal while PostgreSQL was down.

CREATE TABLE manual_clearances (
    uuid         uuid PRIMARY KEY,
    node         text NOT NULL,
    officer      text NOT NULL,
    lbcp         text NOT NULL,
    vrn          text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('release', 'inspect', 'refuse')),
    documents    jsonb NOT NULL,
    ccrns        jsonb NOT NULL,
    cleared_at   timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL CHECK (source IN ('direct', 'journal')),
    bundle_id    bigint REFERENCES bundles (id),
    matched      jsonb NOT NULL DEFAULT '[]'::jsonb,
    unmatched    jsonb NOT NULL DEFAULT '[]'::jsonb
);

ALTER TABLE audit_log ADD COLUMN uuid uuid UNIQUE;
