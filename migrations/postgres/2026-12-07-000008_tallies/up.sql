-- Counts kept as rows change, so the pages and reports that sum a whole
-- survey (status, the web view's table, report) read a few rows instead of
-- grouping a million. Triggers keep them, in the transaction that moves
-- the rows, whichever tool writes; here once per statement, from the rows
-- it changed (transition tables), so a define of 37,000 components is one
-- upsert, not 37,000.
--
-- Per run: its components per state and active flag, with their summed
-- runtime. A run's components are work items of its label and stage, so
-- joined with remote_runs these give every per-label and per-stage count.
CREATE TABLE run_tallies (
    remote_id  BIGINT NOT NULL,
    state      TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    components BIGINT NOT NULL DEFAULT 0,
    runtime    DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_id, state, active)
);

-- Per label and stage: work items per state, one row.
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
       COUNT(*) FILTER (WHERE state = 'ready'), COUNT(*) FILTER (WHERE state = 'done'),
       COUNT(*) FILTER (WHERE state = 'failed'), COUNT(*) FILTER (WHERE state = 'abandoned')
FROM work_items GROUP BY label, stage;

-- Each statement's changed rows (transition tables), +1 for each new one
-- and -1 for each old one, summed per key; keys that net to nothing are
-- left alone (and not locked). Sorted, so two writers take tally rows in
-- the same order.
CREATE FUNCTION run_tallies_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO run_tallies (remote_id, state, active, components, runtime)
        SELECT remote_id, state, active, SUM(n), SUM(rt) FROM (SELECT remote_id, state, active, 1 AS n, COALESCE(runtime, 0) AS rt FROM new_rows) AS d
        GROUP BY remote_id, state, active
        HAVING SUM(n) <> 0 OR SUM(rt) <> 0
        ORDER BY remote_id, state, active
        ON CONFLICT (remote_id, state, active) DO UPDATE
        SET components = run_tallies.components + EXCLUDED.components,
            runtime = run_tallies.runtime + EXCLUDED.runtime;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO run_tallies (remote_id, state, active, components, runtime)
        SELECT remote_id, state, active, SUM(n), SUM(rt) FROM (SELECT remote_id, state, active, 1 AS n, COALESCE(runtime, 0) AS rt FROM new_rows UNION ALL SELECT remote_id, state, active, -1 AS n, -COALESCE(runtime, 0) AS rt FROM old_rows) AS d
        GROUP BY remote_id, state, active
        HAVING SUM(n) <> 0 OR SUM(rt) <> 0
        ORDER BY remote_id, state, active
        ON CONFLICT (remote_id, state, active) DO UPDATE
        SET components = run_tallies.components + EXCLUDED.components,
            runtime = run_tallies.runtime + EXCLUDED.runtime;
    ELSE
        INSERT INTO run_tallies (remote_id, state, active, components, runtime)
        SELECT remote_id, state, active, SUM(n), SUM(rt) FROM (SELECT remote_id, state, active, -1 AS n, -COALESCE(runtime, 0) AS rt FROM old_rows) AS d
        GROUP BY remote_id, state, active
        HAVING SUM(n) <> 0 OR SUM(rt) <> 0
        ORDER BY remote_id, state, active
        ON CONFLICT (remote_id, state, active) DO UPDATE
        SET components = run_tallies.components + EXCLUDED.components,
            runtime = run_tallies.runtime + EXCLUDED.runtime;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION item_tallies_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO item_tallies (label, stage, ready, done, failed, abandoned)
        SELECT label, stage, COALESCE(SUM(n) FILTER (WHERE state = 'ready'), 0), COALESCE(SUM(n) FILTER (WHERE state = 'done'), 0),
               COALESCE(SUM(n) FILTER (WHERE state = 'failed'), 0), COALESCE(SUM(n) FILTER (WHERE state = 'abandoned'), 0)
        FROM (SELECT label, stage, state, 1 AS n FROM new_rows) AS d
        GROUP BY label, stage
        HAVING COALESCE(SUM(n) FILTER (WHERE state = 'ready'), 0) <> 0 OR COALESCE(SUM(n) FILTER (WHERE state = 'done'), 0) <> 0
            OR COALESCE(SUM(n) FILTER (WHERE state = 'failed'), 0) <> 0 OR COALESCE(SUM(n) FILTER (WHERE state = 'abandoned'), 0) <> 0
        ORDER BY label, stage
        ON CONFLICT (label, stage) DO UPDATE
        SET ready = item_tallies.ready + EXCLUDED.ready,
            done = item_tallies.done + EXCLUDED.done,
            failed = item_tallies.failed + EXCLUDED.failed,
            abandoned = item_tallies.abandoned + EXCLUDED.abandoned;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO item_tallies (label, stage, ready, done, failed, abandoned)
        SELECT label, stage, COALESCE(SUM(n) FILTER (WHERE state = 'ready'), 0), COALESCE(SUM(n) FILTER (WHERE state = 'done'), 0),
               COALESCE(SUM(n) FILTER (WHERE state = 'failed'), 0), COALESCE(SUM(n) FILTER (WHERE state = 'abandoned'), 0)
        FROM (SELECT label, stage, state, 1 AS n FROM new_rows UNION ALL SELECT label, stage, state, -1 AS n FROM old_rows) AS d
        GROUP BY label, stage
        HAVING COALESCE(SUM(n) FILTER (WHERE state = 'ready'), 0) <> 0 OR COALESCE(SUM(n) FILTER (WHERE state = 'done'), 0) <> 0
            OR COALESCE(SUM(n) FILTER (WHERE state = 'failed'), 0) <> 0 OR COALESCE(SUM(n) FILTER (WHERE state = 'abandoned'), 0) <> 0
        ORDER BY label, stage
        ON CONFLICT (label, stage) DO UPDATE
        SET ready = item_tallies.ready + EXCLUDED.ready,
            done = item_tallies.done + EXCLUDED.done,
            failed = item_tallies.failed + EXCLUDED.failed,
            abandoned = item_tallies.abandoned + EXCLUDED.abandoned;
    ELSE
        INSERT INTO item_tallies (label, stage, ready, done, failed, abandoned)
        SELECT label, stage, COALESCE(SUM(n) FILTER (WHERE state = 'ready'), 0), COALESCE(SUM(n) FILTER (WHERE state = 'done'), 0),
               COALESCE(SUM(n) FILTER (WHERE state = 'failed'), 0), COALESCE(SUM(n) FILTER (WHERE state = 'abandoned'), 0)
        FROM (SELECT label, stage, state, -1 AS n FROM old_rows) AS d
        GROUP BY label, stage
        HAVING COALESCE(SUM(n) FILTER (WHERE state = 'ready'), 0) <> 0 OR COALESCE(SUM(n) FILTER (WHERE state = 'done'), 0) <> 0
            OR COALESCE(SUM(n) FILTER (WHERE state = 'failed'), 0) <> 0 OR COALESCE(SUM(n) FILTER (WHERE state = 'abandoned'), 0) <> 0
        ORDER BY label, stage
        ON CONFLICT (label, stage) DO UPDATE
        SET ready = item_tallies.ready + EXCLUDED.ready,
            done = item_tallies.done + EXCLUDED.done,
            failed = item_tallies.failed + EXCLUDED.failed,
            abandoned = item_tallies.abandoned + EXCLUDED.abandoned;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER run_tallies_insert AFTER INSERT ON remote_components
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add();
CREATE TRIGGER run_tallies_update AFTER UPDATE ON remote_components
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add();
CREATE TRIGGER run_tallies_delete AFTER DELETE ON remote_components
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add();
CREATE TRIGGER item_tallies_insert AFTER INSERT ON work_items
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION item_tallies_add();
CREATE TRIGGER item_tallies_update AFTER UPDATE ON work_items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION item_tallies_add();
CREATE TRIGGER item_tallies_delete AFTER DELETE ON work_items
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION item_tallies_add();

-- Results applied per hour and run: the throughput the web view draws,
-- without reading every result. Results are only ever added.
CREATE TABLE result_hours (
    hour      TIMESTAMP NOT NULL,
    remote_id BIGINT NOT NULL,
    results   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, remote_id)
);

INSERT INTO result_hours (hour, remote_id, results)
SELECT date_trunc('hour', applied_at), remote_id, COUNT(*)
FROM results GROUP BY 1, 2;

CREATE FUNCTION result_hours_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO result_hours (hour, remote_id, results)
    SELECT date_trunc('hour', applied_at), remote_id, COUNT(*) FROM new_rows
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (hour, remote_id) DO UPDATE
    SET results = result_hours.results + EXCLUDED.results;
    RETURN NULL;
END $$;

CREATE TRIGGER result_hours_insert AFTER INSERT ON results
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION result_hours_add();

-- The pages that look back over an interval (24 h, 7 days) read what
-- changed in it, not every row.
CREATE INDEX work_items_updated ON work_items (updated_at);
CREATE INDEX transfer_rates_at ON transfer_rates (at);
-- Failed components over an interval, per fault and exit status and run,
-- read from the index alone.
CREATE INDEX remote_components_failures ON remote_components (state, updated_at, fault, exit_status, remote_id);
