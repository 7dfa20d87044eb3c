-- Accounting records this node owes an operator's RADIUS server (our accounting client). A
-- record is written here when its call event happens and deleted only when the server has
-- acknowledged it, so a RADIUS outage or a restart loses nothing: the sender resumes from
-- what is left. The unique key makes writing the same event twice a no-op.
CREATE TABLE radius_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT   NOT NULL,
    conf_id     TEXT   NOT NULL,
    leg         TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    -- When the event happened (Acct-Delay-Time is counted from it).
    event_at    BIGINT NOT NULL,
    -- The record, `Attribute-Name=value` per line, as it will be sent.
    attributes  TEXT   NOT NULL,
    UNIQUE (conf_id, leg, status)
);
CREATE INDEX radius_outbox_by_node ON radius_outbox (node, id);
