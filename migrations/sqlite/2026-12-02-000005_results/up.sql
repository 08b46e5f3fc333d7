-- Every component attempt whose result was applied, in the order they were
-- applied: what `remotetool results` hands to the pipeline's consumers.
CREATE TABLE results (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    component_id BIGINT NOT NULL REFERENCES remote_components (id),
    remote_id    BIGINT NOT NULL,
    work_item_id BIGINT NOT NULL REFERENCES work_items (id),
    attempt      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    outputs      TEXT NOT NULL DEFAULT '[]',
    applied_at   TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX results_component ON results (component_id);
CREATE INDEX results_item ON results (work_item_id);

-- Each named consumer's cursor: the last result it was given, and who
-- holds it now (a lease, as for runs).
CREATE TABLE consumers (
    name         TEXT PRIMARY KEY NOT NULL,
    cursor       BIGINT NOT NULL DEFAULT 0,
    holder_host  TEXT,
    holder_pid   INTEGER,
    heartbeat_at TIMESTAMP,
    updated_at   TIMESTAMP NOT NULL
);

-- A run whose results are recorded, waiting for its recipe's apply
-- command to succeed before it leaves `run`.
ALTER TABLE remote_runs ADD COLUMN apply_pending BOOLEAN NOT NULL DEFAULT 0;
