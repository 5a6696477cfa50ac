-- Idempotency records live 24 hours (node/writes.py IDEMPOTENCY_TTL): lookups ignore older ones
-- and the active node deletes them in batches, oldest first, by created_at.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
CREATE INDEX public_idempotency_keys_created_at ON public_idempotency_keys (created_at);

-- Registration keys are scoped by the request's fingerprint (method, path, body): a key reused
-- with another body is another application, never another applicant's stored answer.
ALTER TABLE public_idempotency_keys DROP CONSTRAINT public_idempotency_keys_pkey;
ALTER TABLE public_idempotency_keys ADD PRIMARY KEY (key, request_hash);

-- Approvals stored before answers were redacted hold the new account's API key in clear.
UPDATE idempotency_keys
SET response = response || jsonb_build_object(
    'api_key', NULL,
    'api_key_issued', true,
    'api_key_detail', 'the API key was issued in the first answer to this approval and is not'
        || ' kept: it cannot be shown again')
WHERE jsonb_typeof(response -> 'api_key') = 'string';
