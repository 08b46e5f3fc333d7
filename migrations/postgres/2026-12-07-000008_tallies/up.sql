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
--
-- Work items are not counted this way: one row per label and stage would
-- make every transaction that moves a label's work items wait for the
-- others; their counts come from the index on (label, stage, state).
CREATE TABLE run_tallies (
    remote_id  BIGINT NOT NULL,
    state      TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    components BIGINT NOT NULL DEFAULT 0,
    runtime    DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (remote_id, state, active)
);

INSERT INTO run_tallies (remote_id, state, active, components, runtime)
SELECT remote_id, state, active, COUNT(*), COALESCE(SUM(runtime), 0)
FROM remote_components GROUP BY remote_id, state, active;

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

CREATE TRIGGER run_tallies_insert AFTER INSERT ON remote_components
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add();
CREATE TRIGGER run_tallies_update AFTER UPDATE ON remote_components
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add();
CREATE TRIGGER run_tallies_delete AFTER DELETE ON remote_components
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add();

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
