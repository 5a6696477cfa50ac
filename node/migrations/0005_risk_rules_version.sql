-- The active rule set's version (node/risk_cache.py): nodes keep the rules in memory and every
-- submission checks, in its own insert statement, that this is still the version it assessed
-- with. Bumped by a trigger in the transaction of any change to risk_rules, whoever makes it
-- (API, admin, a test), so the version and the rules a snapshot sees always agree.
CREATE TABLE risk_rules_version (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint NOT NULL
);
INSERT INTO risk_rules_version (version) VALUES (1);

CREATE FUNCTION risk_rules_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE risk_rules_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER risk_rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_rules
    FOR EACH STATEMENT EXECUTE FUNCTION risk_rules_version_bump();
