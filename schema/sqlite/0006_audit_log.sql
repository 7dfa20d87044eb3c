-- Every change made through the admin API: who (the token's name and role), when, what and
-- on what. Rows are only ever added.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    role    TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
