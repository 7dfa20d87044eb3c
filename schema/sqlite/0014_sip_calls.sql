-- A SIP account's calls in progress, on every node: its calls at once are counted here, under
-- the account row's lock, so two nodes cannot both take the call that is one too many. A row
-- goes when its call ends; those of a node that stopped (its heartbeat older than the grace)
-- are swept by the others, and a node starting again forgets its own.
CREATE TABLE sip_calls (
    sip_account_id BIGINT NOT NULL REFERENCES sip_accounts (id) ON DELETE CASCADE,
    call_key       TEXT   NOT NULL,             -- the node's name for the call, unique
    node           TEXT   NOT NULL,
    started_at     BIGINT NOT NULL,
    PRIMARY KEY (sip_account_id, call_key)
);
CREATE INDEX sip_calls_by_node ON sip_calls (node);
