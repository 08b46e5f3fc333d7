-- DDL commits on its own in MySQL: should this migration stop half way
-- (creating a trigger needs SUPER, or log_bin_trust_function_creators, on
-- a server with binary logging), running it again starts over cleanly:
-- tables if missing, triggers dropped and made again, counts recounted.
--
-- Counts kept as rows change, so the pages and reports that sum a whole
-- survey (status, the web view's table, report) read a few rows instead of
-- grouping a million. Triggers keep them, in the transaction that moves
-- the rows, whichever tool writes.
--
-- Per run: its components per state and active flag, with their summed
-- runtime. A run's components are work items of its label and stage, so
-- joined with remote_runs these give every per-label and per-stage count.
--
-- Work items are not counted this way: one row per label and stage would
-- make every transaction that moves a label's work items wait for the
-- others; their counts come from the index on (label, stage, state).
CREATE TABLE IF NOT EXISTS run_tallies (
    remote_id  BIGINT NOT NULL,
    state      VARCHAR(32) NOT NULL,
    active     BOOLEAN NOT NULL,
    components BIGINT NOT NULL DEFAULT 0,
    runtime    DOUBLE NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_id, state, active)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

DROP TRIGGER IF EXISTS run_tallies_insert;
DROP TRIGGER IF EXISTS run_tallies_update;
DROP TRIGGER IF EXISTS run_tallies_delete;
DELETE FROM run_tallies;

INSERT INTO run_tallies (remote_id, state, active, components, runtime)
SELECT remote_id, state, active, COUNT(*), COALESCE(SUM(runtime), 0)
FROM remote_components GROUP BY remote_id, state, active;

CREATE TRIGGER run_tallies_insert AFTER INSERT ON remote_components FOR EACH ROW
    INSERT INTO run_tallies (remote_id, state, active, components, runtime)
        VALUES (NEW.remote_id, NEW.state, NEW.active, 1, COALESCE(NEW.runtime, 0))
        ON DUPLICATE KEY UPDATE components = components + 1, runtime = runtime + VALUES(runtime);

CREATE TRIGGER run_tallies_update AFTER UPDATE ON remote_components FOR EACH ROW
BEGIN
    IF NOT (OLD.remote_id <=> NEW.remote_id AND OLD.state <=> NEW.state
            AND OLD.active <=> NEW.active AND OLD.runtime <=> NEW.runtime) THEN
        UPDATE run_tallies
        SET components = components - 1, runtime = runtime - COALESCE(OLD.runtime, 0)
        WHERE remote_id = OLD.remote_id AND state = OLD.state AND active = OLD.active;
        INSERT INTO run_tallies (remote_id, state, active, components, runtime)
        VALUES (NEW.remote_id, NEW.state, NEW.active, 1, COALESCE(NEW.runtime, 0))
        ON DUPLICATE KEY UPDATE components = components + 1, runtime = runtime + VALUES(runtime);
    END IF;
END;

CREATE TRIGGER run_tallies_delete AFTER DELETE ON remote_components FOR EACH ROW
    UPDATE run_tallies
        SET components = components - 1, runtime = runtime - COALESCE(OLD.runtime, 0)
        WHERE remote_id = OLD.remote_id AND state = OLD.state AND active = OLD.active;

-- Results applied per hour and run: the throughput the web view draws,
-- without reading every result. Results are only ever added.
CREATE TABLE IF NOT EXISTS result_hours (
    hour      DATETIME(6) NOT NULL,
    remote_id BIGINT NOT NULL,
    results   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, remote_id)
) ENGINE=InnoDB;

DROP TRIGGER IF EXISTS result_hours_insert;
DELETE FROM result_hours;

INSERT INTO result_hours (hour, remote_id, results)
SELECT DATE_FORMAT(applied_at, '%Y-%m-%d %H:00:00'), remote_id, COUNT(*)
FROM results GROUP BY 1, 2;

CREATE TRIGGER result_hours_insert AFTER INSERT ON results FOR EACH ROW
    INSERT INTO result_hours (hour, remote_id, results)
    VALUES (DATE_FORMAT(NEW.applied_at, '%Y-%m-%d %H:00:00'), NEW.remote_id, 1)
    ON DUPLICATE KEY UPDATE results = results + 1;

-- The pages that look back over an interval (24 h, 7 days) read what
-- changed in it, not every row.
CREATE INDEX work_items_updated ON work_items (updated_at);
CREATE INDEX transfer_rates_at ON transfer_rates (at);
-- Failed components over an interval, per fault and exit status and run,
-- read from the index alone.
CREATE INDEX remote_components_failures ON remote_components (state, updated_at, fault, exit_status, remote_id);
