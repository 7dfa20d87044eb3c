-- The money core: cards, their ledger, call reservations, call records, rate decks.
-- Amounts are BIGINT micro-units (10^-6 of the currency); times are BIGINT milliseconds since
-- the Unix epoch (UTC). Flags are 0/1 BIGINTs so that one set of queries serves SQLite and
-- PostgreSQL through sqlx's Any driver.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE versions (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account       TEXT NOT NULL UNIQUE,
    pin_salt      TEXT NOT NULL,
    pin_hash      TEXT NOT NULL,
    pinless       BIGINT NOT NULL DEFAULT 0,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked', 'locked')),
    expires_at    BIGINT,
    currency      TEXT NOT NULL,
    balance       BIGINT NOT NULL DEFAULT 0,
    reserved      BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    credit_limit  BIGINT NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    active_calls  BIGINT NOT NULL DEFAULT 0 CHECK (active_calls >= 0),
    max_calls     BIGINT NOT NULL DEFAULT 1,
    language      TEXT NOT NULL DEFAULT 'en',
    tenant        TEXT NOT NULL DEFAULT 'default',
    rate_deck     TEXT NOT NULL DEFAULT 'default',
    tollfree_only BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    CHECK (balance + credit_limit >= 0)
);

CREATE TABLE ledger (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      BIGINT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL CHECK (kind IN ('topup', 'call', 'adjustment', 'refund')),
    amount          BIGINT NOT NULL,
    balance_after   BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    reference       TEXT NOT NULL,
    note            TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL
);
CREATE INDEX ledger_by_account ON ledger (account_id, id);

CREATE TABLE reservations (
    id                TEXT PRIMARY KEY,
    account_id        BIGINT NOT NULL REFERENCES accounts (id),
    session_id        TEXT NOT NULL,
    owner             TEXT NOT NULL,
    amount            BIGINT NOT NULL CHECK (amount >= 0),
    granted_seconds   BIGINT NOT NULL,
    destination       TEXT NOT NULL,
    ani               TEXT NOT NULL,
    access_number     TEXT NOT NULL,
    deck              TEXT NOT NULL,
    rate_prefix       TEXT NOT NULL,
    rate_description  TEXT NOT NULL,
    rate_per_minute   TEXT NOT NULL,
    connect_fee       BIGINT NOT NULL,
    initial_increment BIGINT NOT NULL,
    increment         BIGINT NOT NULL,
    minimum_seconds   BIGINT NOT NULL,
    setup_at          BIGINT NOT NULL,
    connect_at        BIGINT,
    updated_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL
);
CREATE INDEX reservations_by_expiry ON reservations (expires_at);
CREATE INDEX reservations_by_account ON reservations (account_id);

CREATE TABLE call_records (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conf_id          TEXT NOT NULL UNIQUE,
    session_id       TEXT NOT NULL,
    account          TEXT NOT NULL,
    ani              TEXT NOT NULL,
    access_number    TEXT NOT NULL,
    destination      TEXT NOT NULL,
    setup_at         BIGINT NOT NULL,
    connect_at       BIGINT,
    disconnect_at    BIGINT,
    billed_seconds   BIGINT NOT NULL DEFAULT 0,
    cost             BIGINT NOT NULL DEFAULT 0,
    currency         TEXT NOT NULL DEFAULT '',
    deck             TEXT NOT NULL DEFAULT '',
    rate_prefix      TEXT NOT NULL DEFAULT '',
    rate_description TEXT NOT NULL DEFAULT '',
    disconnect_cause TEXT NOT NULL DEFAULT '',
    return_code      BIGINT NOT NULL,
    node             TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX call_records_by_session ON call_records (session_id);
CREATE INDEX call_records_by_account ON call_records (account, setup_at);

CREATE TABLE rate_decks (
    name        TEXT PRIMARY KEY,
    row_count   BIGINT NOT NULL,
    imported_at BIGINT NOT NULL,
    source      TEXT NOT NULL
);

CREATE TABLE rates (
    deck              TEXT NOT NULL,
    prefix            TEXT NOT NULL,
    description       TEXT NOT NULL,
    rate_per_minute   TEXT NOT NULL,
    connect_fee       BIGINT NOT NULL,
    initial_increment BIGINT NOT NULL,
    increment         BIGINT NOT NULL,
    minimum_seconds   BIGINT NOT NULL,
    time_band         TEXT NOT NULL DEFAULT '',
    currency          TEXT NOT NULL,
    line              BIGINT NOT NULL
);
CREATE INDEX rates_by_deck ON rates (deck);

CREATE TABLE prefix_lists (
    list        TEXT NOT NULL CHECK (list IN ('blocked', 'tollfree')),
    prefix      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (list, prefix)
);

CREATE TABLE auth_failures (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX auth_failures_by_subject ON auth_failures (kind, subject, at);

CREATE TABLE lockouts (
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    locked_until BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL
);
