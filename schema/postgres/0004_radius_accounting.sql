-- Accounting records received from RADIUS clients (gateways running the debit-card
-- application against our store). A gateway whose Accounting-Response comes late sends the
-- same record again; the key (conference id, leg, status) makes the second copy a no-op, so a
-- Stop is never billed twice. `status` is start, stop, or interim:<session seconds>.
CREATE TABLE radius_accounting (
    conf_id      TEXT   NOT NULL,
    leg          TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    client       TEXT   NOT NULL,
    account      TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    -- Every attribute as received, `name=value` per line, for disputes.
    attributes   TEXT   NOT NULL,
    -- What the store did with it (settled 0.12, connected, no reservation …).
    outcome      TEXT   NOT NULL,
    PRIMARY KEY (conf_id, leg, status)
);
