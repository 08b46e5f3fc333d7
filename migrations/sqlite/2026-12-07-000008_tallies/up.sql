-- Counts kept as rows change, so the pages and reports that sum a whole
-- survey (status, the web view's table, report) read a few rows instead of
-- grouping a million. Triggers keep them, in the transaction that moves
-- the rows, whichever tool writes.
--
-- Per run: its components per state and active flag, with their summed
-- runtime. A run's components are work items of its label and stage, so
-- joined with remote_runs these give every per-label and per-stage count.
CREATE TABLE run_tallies (
    remote_id  BIGINT NOT NULL,
    state      TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    components BIGINT NOT NULL DEFAULT 0,
    runtime    DOUBLE NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_id, state, active)
);

-- Per label and stage: work items per state, one row (a change touches
-- one row, so concurrent writers of a label and stage queue, never
-- deadlock on it).
CREATE TABLE item_tallies (
    label     TEXT NOT NULL,
    stage     TEXT NOT NULL,
    ready     BIGINT NOT NULL DEFAULT 0,
    done      BIGINT NOT NULL DEFAULT 0,
    failed    BIGINT NOT NULL DEFAULT 0,
    abandoned BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (label, stage)
);

INSERT INTO run_tallies (remote_id, state, active, components, runtime)
SELECT remote_id, state, active, COUNT(*), COALESCE(SUM(runtime), 0)
FROM remote_components GROUP BY remote_id, state, active;

INSERT INTO item_tallies (label, stage, ready, done, failed, abandoned)
SELECT label, stage,
       SUM(state = 'ready'), SUM(state = 'done'), SUM(state = 'failed'), SUM(state = 'abandoned')
FROM work_items GROUP BY label, stage;

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

CREATE TRIGGER item_tallies_insert AFTER INSERT ON work_items
BEGIN
    INSERT INTO item_tallies (label, stage, ready, done, failed, abandoned)
    VALUES (NEW.label, NEW.stage, NEW.state = 'ready', NEW.state = 'done',
            NEW.state = 'failed', NEW.state = 'abandoned')
    ON CONFLICT (label, stage) DO UPDATE
    SET ready = ready + excluded.ready, done = done + excluded.done,
        failed = failed + excluded.failed, abandoned = abandoned + excluded.abandoned;
END;

CREATE TRIGGER item_tallies_update AFTER UPDATE OF label, stage, state ON work_items
WHEN OLD.label IS NOT NEW.label OR OLD.stage IS NOT NEW.stage OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE item_tallies
    SET ready = ready - (OLD.state = 'ready'), done = done - (OLD.state = 'done'),
        failed = failed - (OLD.state = 'failed'), abandoned = abandoned - (OLD.state = 'abandoned')
    WHERE label = OLD.label AND stage = OLD.stage;
    INSERT INTO item_tallies (label, stage, ready, done, failed, abandoned)
    VALUES (NEW.label, NEW.stage, NEW.state = 'ready', NEW.state = 'done',
            NEW.state = 'failed', NEW.state = 'abandoned')
    ON CONFLICT (label, stage) DO UPDATE
    SET ready = ready + excluded.ready, done = done + excluded.done,
        failed = failed + excluded.failed, abandoned = abandoned + excluded.abandoned;
END;

CREATE TRIGGER item_tallies_delete AFTER DELETE ON work_items
BEGIN
    UPDATE item_tallies
    SET ready = ready - (OLD.state = 'ready'), done = done - (OLD.state = 'done'),
        failed = failed - (OLD.state = 'failed'), abandoned = abandoned - (OLD.state = 'abandoned')
    WHERE label = OLD.label AND stage = OLD.stage;
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
