-- Access numbers managed through the admin API; those fixed in a node's configuration file are
-- not here. Every node reads this table, so a number an admin assigns or an ITSP changes on
-- one node is served by all of them.
CREATE TABLE access_numbers (
    number       TEXT   PRIMARY KEY,
    tenant       TEXT   NOT NULL,
    flow         TEXT,
    languages    TEXT   NOT NULL,          -- comma-separated; the first is the default
    trust_ani    BIGINT NOT NULL DEFAULT 0,
    trusted_only BIGINT NOT NULL DEFAULT 0,
    pinless      BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL,
    updated_by   TEXT   NOT NULL
);
CREATE INDEX access_numbers_by_tenant ON access_numbers (tenant, number);
