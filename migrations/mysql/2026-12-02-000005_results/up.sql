-- Every component attempt whose result was applied, in the order they were
-- applied: what `remotetool results` hands to the pipeline's consumers.
CREATE TABLE results (
    seq          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    component_id BIGINT NOT NULL,
    remote_id    BIGINT NOT NULL,
    work_item_id BIGINT NOT NULL,
    attempt      INTEGER NOT NULL,
    state        VARCHAR(32) NOT NULL,
    outputs      LONGTEXT NOT NULL DEFAULT '[]',
    applied_at   DATETIME(6) NOT NULL,
    UNIQUE KEY results_component (component_id),
    KEY results_item (work_item_id),
    FOREIGN KEY (component_id) REFERENCES remote_components (id),
    FOREIGN KEY (work_item_id) REFERENCES work_items (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Each named consumer's cursor: the last result it was given, and who
-- holds it now (a lease, as for runs).
CREATE TABLE consumers (
    name         VARCHAR(255) NOT NULL PRIMARY KEY,
    `cursor`     BIGINT NOT NULL DEFAULT 0,
    holder_host  VARCHAR(255),
    holder_pid   INTEGER,
    heartbeat_at DATETIME(6),
    updated_at   DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A run whose results are recorded, waiting for its recipe's apply
-- command to succeed before it leaves `run`.
ALTER TABLE remote_runs ADD COLUMN apply_pending BOOLEAN NOT NULL DEFAULT FALSE;
