-- Batches of cards as objects finance can find again: which batch a card came from, what it
-- was sold as, and one change that blocks or unblocks all of it. Cards made before this
-- migration belong to no batch.
CREATE TABLE batches (
    id          TEXT   PRIMARY KEY,        -- B-YYYYMMDD-<6 hex>, drawn at creation
    name        TEXT   NOT NULL,           -- what finance calls it ("December retail 5 USD")
    tenant      TEXT   NOT NULL,
    currency    TEXT   NOT NULL,
    face_value  BIGINT NOT NULL,           -- each card's opening balance, in micro-units
    cards       BIGINT NOT NULL,
    expires_at  BIGINT,
    created_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL            -- the token name or `cli`
);
CREATE INDEX batches_by_tenant ON batches (tenant, created_at);

ALTER TABLE accounts ADD COLUMN batch_id TEXT REFERENCES batches (id);
CREATE INDEX accounts_by_batch ON accounts (batch_id);
