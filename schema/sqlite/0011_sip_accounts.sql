-- Softphone subscribers (PC-to-phone, seeds 000 and 004): SIP accounts that register and dial
-- directly, each spending from a prepaid card (several may share one: a family, a small
-- office). The secret is kept only as the RFC 7616 HA1 for each algorithm we accept, never in
-- the clear. Bindings live here too, so every node behind the dispatcher knows where a
-- subscriber is, whichever node took its REGISTER.
CREATE TABLE sip_accounts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    username          TEXT   NOT NULL,
    domain            TEXT   NOT NULL,          -- our domain, and the digest realm
    ha1_md5           TEXT   NOT NULL,          -- hex MD5(username:domain:password)
    ha1_sha256        TEXT   NOT NULL,          -- hex SHA-256 of the same
    account_id        BIGINT NOT NULL REFERENCES accounts (id),
    tenant            TEXT   NOT NULL,          -- the card's
    status            TEXT   NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    caller_id         TEXT,                     -- the number presented on its calls
    max_calls         BIGINT NOT NULL DEFAULT 1 CHECK (max_calls >= 1),
    bar_international BIGINT NOT NULL DEFAULT 0,
    bar_premium       BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    updated_by        TEXT   NOT NULL,          -- the token name or `cli`
    UNIQUE (username, domain)
);
CREATE INDEX sip_accounts_by_card ON sip_accounts (account_id);
CREATE INDEX sip_accounts_by_tenant ON sip_accounts (tenant, username);

-- Where each registered subscriber can be reached (RFC 3261 §10.3), until it expires.
CREATE TABLE sip_bindings (
    sip_account_id BIGINT NOT NULL REFERENCES sip_accounts (id) ON DELETE CASCADE,
    contact        TEXT   NOT NULL,             -- the Contact URI as registered
    source         TEXT   NOT NULL,             -- transport and address the REGISTER came from
    call_id        TEXT   NOT NULL,
    cseq           BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    node           TEXT   NOT NULL,             -- the node that took it (holds a TCP/TLS connection)
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (sip_account_id, contact)
);
CREATE INDEX sip_bindings_by_expiry ON sip_bindings (expires_at);
