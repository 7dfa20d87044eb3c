-- Reports for finance staff and ITSPs: revenue, minutes, ASR/ACD per day, destination group,
-- gateway and return code, per tenant, fast on millions of call records.
--
-- A record now says whose it is (the card's tenant, or for an unknown card the access
-- number's) and which gateway carried it (the last one tried; empty when none was).
ALTER TABLE call_records ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE call_records ADD COLUMN gateway TEXT NOT NULL DEFAULT '';
UPDATE call_records SET tenant = COALESCE(
    (SELECT a.tenant FROM accounts a WHERE a.account = call_records.account), '');

-- Reports count a record on the UTC day it was written (when the money moved), as the ledger
-- does; these keep a day's records and entries together.
CREATE INDEX call_records_by_created ON call_records (created_at);
CREATE INDEX ledger_by_created ON ledger (created_at);

-- Each closed UTC day, rolled up once by whichever node gets to it first (the day's row in
-- `report_days` is the claim). Days not rolled up yet (today) are counted from the records.
CREATE TABLE report_days (
    day       BIGINT PRIMARY KEY,          -- days since 1970-01-01 (UTC)
    rolled_at BIGINT NOT NULL,
    records   BIGINT NOT NULL,             -- call records in the day, for the recount check
    entries   BIGINT NOT NULL              -- ledger entries in the day
);

CREATE TABLE report_calls (
    day            BIGINT NOT NULL,
    tenant         TEXT   NOT NULL,
    currency       TEXT   NOT NULL,
    rate_group     TEXT   NOT NULL,        -- the rate row's description ('' for refused calls)
    gateway        TEXT   NOT NULL,
    return_code    BIGINT NOT NULL,
    attempts       BIGINT NOT NULL,
    answered       BIGINT NOT NULL,
    billed_seconds BIGINT NOT NULL,
    talk_ms        BIGINT NOT NULL,        -- answer to hang-up, for the ACD
    revenue        BIGINT NOT NULL,        -- micro-units charged
    PRIMARY KEY (day, tenant, currency, rate_group, gateway, return_code)
);

CREATE TABLE report_money (
    day      BIGINT NOT NULL,
    tenant   TEXT   NOT NULL,
    currency TEXT   NOT NULL,
    kind     TEXT   NOT NULL,              -- issued (a new card's value), topup, refund, adjustment, call
    entries  BIGINT NOT NULL,
    amount   BIGINT NOT NULL,
    PRIMARY KEY (day, tenant, currency, kind)
);
