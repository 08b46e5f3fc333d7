-- offload schema, MySQL/MariaDB flavour. Keep in step with migrations/sqlite
-- and migrations/postgres. Names and keys compare byte for byte (utf8mb4_bin),
-- as on the other backends; times are DATETIME(6), microseconds as on
-- PostgreSQL; free text is LONGTEXT.
CREATE TABLE work_items (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    stage       VARCHAR(255) NOT NULL,
    stage_id    BIGINT NOT NULL,
    label       VARCHAR(255) NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    params      LONGTEXT NOT NULL DEFAULT '{}',
    state       VARCHAR(32) NOT NULL DEFAULT 'ready',
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  DATETIME(6) NOT NULL,
    updated_at  DATETIME(6) NOT NULL,
    UNIQUE KEY work_items_key (stage, stage_id),
    KEY work_items_pick (label, stage, state, priority)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE remote_runs (
    remote_id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    state             VARCHAR(32) NOT NULL,
    stage             VARCHAR(255) NOT NULL,
    label             VARCHAR(255) NOT NULL,
    path_base         LONGTEXT NOT NULL,
    target            VARCHAR(255),
    job_id            VARCHAR(255),
    last_poll         DATETIME(6),
    fault             INTEGER NOT NULL DEFAULT 0,
    message           LONGTEXT,
    job_policy        VARCHAR(32) NOT NULL DEFAULT 'fatal',
    attempt           INTEGER NOT NULL DEFAULT 0,
    auth_return_state VARCHAR(32),
    created_at        DATETIME(6) NOT NULL,
    updated_at        DATETIME(6) NOT NULL,
    KEY remote_runs_state (state, label, stage)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE remote_components (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    remote_id    BIGINT NOT NULL,
    work_item_id BIGINT NOT NULL,
    state        VARCHAR(32) NOT NULL DEFAULT 'queued',
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    attempts     INTEGER NOT NULL DEFAULT 0,
    exit_status  INTEGER,
    runtime      DOUBLE,
    fault        INTEGER NOT NULL DEFAULT 0,
    result       LONGTEXT,
    created_at   DATETIME(6) NOT NULL,
    updated_at   DATETIME(6) NOT NULL,
    -- A work item belongs to at most one active run: the work item while
    -- active, NULL (which a unique key allows many of) once not.
    active_item  BIGINT AS (IF(active, work_item_id, NULL)) PERSISTENT,
    KEY remote_components_run (remote_id, state),
    KEY remote_components_item (work_item_id),
    UNIQUE KEY remote_components_one_active (active_item),
    FOREIGN KEY (remote_id) REFERENCES remote_runs (remote_id),
    FOREIGN KEY (work_item_id) REFERENCES work_items (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE history (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    remote_id  BIGINT,
    at         DATETIME(6) NOT NULL,
    host       VARCHAR(255) NOT NULL,
    pid        INTEGER NOT NULL,
    tool       VARCHAR(255) NOT NULL,
    from_state VARCHAR(32),
    to_state   VARCHAR(32),
    message    LONGTEXT,
    command    LONGTEXT,
    KEY history_run (remote_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE control (
    tool       VARCHAR(255) NOT NULL PRIMARY KEY,
    paused     BOOLEAN NOT NULL DEFAULT FALSE,
    reason     LONGTEXT,
    changed_at DATETIME(6) NOT NULL,
    changed_by VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE leases (
    remote_id    BIGINT NOT NULL PRIMARY KEY,
    tool         VARCHAR(255) NOT NULL,
    host         VARCHAR(255) NOT NULL,
    pid          INTEGER NOT NULL,
    acquired_at  DATETIME(6) NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    FOREIGN KEY (remote_id) REFERENCES remote_runs (remote_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Rows whose locks (SELECT ... FOR UPDATE) order the transactions that
-- PostgreSQL orders with advisory locks: a lock that ends with its
-- transaction.
CREATE TABLE offload_locks (
    name VARCHAR(32) NOT NULL PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO offload_locks (name) VALUES ('chain'), ('results');
