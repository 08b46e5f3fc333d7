-- offload schema, PostgreSQL flavour. Keep in step with migrations/sqlite.
CREATE TABLE work_items (
    id          BIGSERIAL PRIMARY KEY,
    stage       TEXT NOT NULL,
    stage_id    BIGINT NOT NULL,
    label       TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    params      TEXT NOT NULL DEFAULT '{}',
    state       TEXT NOT NULL DEFAULT 'ready',
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    UNIQUE (stage, stage_id)
);
CREATE INDEX work_items_pick ON work_items (label, stage, state, priority);

CREATE TABLE remote_runs (
    remote_id         BIGSERIAL PRIMARY KEY,
    state             TEXT NOT NULL,
    stage             TEXT NOT NULL,
    label             TEXT NOT NULL,
    path_base         TEXT NOT NULL,
    target            TEXT,
    job_id            TEXT,
    last_poll         TIMESTAMP,
    fault             INTEGER NOT NULL DEFAULT 0,
    message           TEXT,
    job_policy        TEXT NOT NULL DEFAULT 'fatal',
    attempt           INTEGER NOT NULL DEFAULT 0,
    auth_return_state TEXT,
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL
);
CREATE INDEX remote_runs_state ON remote_runs (state, label, stage);

CREATE TABLE remote_components (
    id           BIGSERIAL PRIMARY KEY,
    remote_id    BIGINT NOT NULL REFERENCES remote_runs (remote_id),
    work_item_id BIGINT NOT NULL REFERENCES work_items (id),
    state        TEXT NOT NULL DEFAULT 'queued',
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    attempts     INTEGER NOT NULL DEFAULT 0,
    exit_status  INTEGER,
    runtime      DOUBLE PRECISION,
    fault        INTEGER NOT NULL DEFAULT 0,
    result       TEXT,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);
CREATE INDEX remote_components_run ON remote_components (remote_id, state);
CREATE INDEX remote_components_item ON remote_components (work_item_id);
-- A work item belongs to at most one active run.
CREATE UNIQUE INDEX remote_components_one_active ON remote_components (work_item_id) WHERE active;

CREATE TABLE history (
    id         BIGSERIAL PRIMARY KEY,
    remote_id  BIGINT,
    at         TIMESTAMP NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    tool       TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    message    TEXT,
    command    TEXT
);
CREATE INDEX history_run ON history (remote_id, id);

CREATE TABLE control (
    tool       TEXT PRIMARY KEY NOT NULL,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    reason     TEXT,
    changed_at TIMESTAMP NOT NULL,
    changed_by TEXT NOT NULL
);

CREATE TABLE leases (
    remote_id    BIGINT PRIMARY KEY NOT NULL REFERENCES remote_runs (remote_id),
    tool         TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    acquired_at  TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL
);
