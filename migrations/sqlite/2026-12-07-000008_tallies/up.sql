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
CREATE TABLE run_tallies (
    remote_id  BIGINT NOT NULL,
    state      TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    components BIGINT NOT NULL DEFAULT 0,
    runtime    DOUBLE NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_id, state, active)
);

INSERT INTO run_tallies (remote_id, state, active, components, runtime)
SELECT remote_id, state, active, COUNT(*), COALESCE(SUM(runtime), 0)
FROM remote_components GROUP BY remote_id, state, active;

CREATE TRIGGER run_tallies_insert AFTER INSERT ON remote_components
BEGIN
    INSERT INTO run_tallies (remote_id, state, active, components, runtime)
    VALUES (NEW.remote_id, NEW.state, NEW.active, 1, COALESCE(NEW.runtime, 0))
    ON CONFLICT (remote_id, state, active) DO UPDATE
    SET components = components + 1, runtime = runtime + excluded.runtime;
END;

CREATE TRIGGER run_tallies_update AFTER UPDATE OF remote_id, state, active, runtime ON remote_components
WHEN OLD.remote_id IS NOT NEW.remote_id OR OLD.state IS NOT NEW.state
  OR OLD.active IS NOT NEW.active OR OLD.runtime IS NOT NEW.runtime
BEGIN
    UPDATE run_tallies
    SET components = components - 1, runtime = runtime - COALESCE(OLD.runtime, 0)
    WHERE remote_id = OLD.remote_id AND state = OLD.state AND active = OLD.active;
    INSERT INTO run_tallies (remote_id, state, active, components, runtime)
    VALUES (NEW.remote_id, NEW.state, NEW.active, 1, COALESCE(NEW.runtime, 0))
    ON CONFLICT (remote_id, state, active) DO UPDATE
    SET components = components + 1, runtime = runtime + excluded.runtime;
END;

CREATE TRIGGER run_tallies_delete AFTER DELETE ON remote_components
BEGIN
    UPDATE run_tallies
    SET components = components - 1, runtime = runtime - COALESCE(OLD.runtime, 0)
    WHERE remote_id = OLD.remote_id AND state = OLD.state AND active = OLD.active;
END;

-- Results applied per hour and run: the throughput the web view draws,
-- without reading every result. Results are only ever added.
CREATE TABLE result_hours (
    hour      TIMESTAMP NOT NULL,
    remote_id BIGINT NOT NULL,
    results   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, remote_id)
);

INSERT INTO result_hours (hour, remote_id, results)
SELECT strftime('%Y-%m-%d %H:00:00', applied_at), remote_id, COUNT(*)
FROM results GROUP BY 1, 2;

CREATE TRIGGER result_hours_insert AFTER INSERT ON results
BEGIN
    INSERT INTO result_hours (hour, remote_id, results)
    VALUES (strftime('%Y-%m-%d %H:00:00', NEW.applied_at), NEW.remote_id, 1)
    ON CONFLICT (hour, remote_id) DO UPDATE SET results = results + 1;
END;

-- The pages that look back over an interval (24 h, 7 days) read what
-- changed in it, not every row.
CREATE INDEX work_items_updated ON work_items (updated_at);
CREATE INDEX transfer_rates_at ON transfer_rates (at);
-- Failed components over an interval, per fault and exit status and run,
-- read from the index alone.
CREATE INDEX remote_components_failures ON remote_components (state, updated_at, fault, exit_status, remote_id);
