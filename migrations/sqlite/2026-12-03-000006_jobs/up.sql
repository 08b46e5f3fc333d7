-- Every batch job a run had, as poll saw it end: what the scheduler's
-- accounting says it used (source 'sacct'), or, where the site keeps no
-- accounting, what the run asked for and the job summary's wall time
-- (source 'estimate'). `remotetool report` reads it.
CREATE TABLE remote_jobs (
    remote_id    BIGINT NOT NULL REFERENCES remote_runs (remote_id),
    job_id       TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    source       TEXT NOT NULL,
    final_state  TEXT,
    elapsed_s    BIGINT,
    alloc_cpus   BIGINT,
    cpu_s        DOUBLE PRECISION,
    nodes        BIGINT,
    req_nodes    BIGINT,
    timelimit_s  BIGINT,
    recorded_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (remote_id, job_id)
);
