-- Every batch job a run had, as poll saw it end: what the scheduler's
-- accounting says it used (source 'sacct'), or, where the site keeps no
-- accounting, what the run asked for and the job summary's wall time
-- (source 'estimate'). `remotetool report` reads it.
CREATE TABLE remote_jobs (
    remote_id    BIGINT NOT NULL,
    job_id       VARCHAR(255) NOT NULL,
    attempt      INTEGER NOT NULL,
    source       VARCHAR(32) NOT NULL,
    final_state  VARCHAR(255),
    elapsed_s    BIGINT,
    alloc_cpus   BIGINT,
    cpu_s        DOUBLE,
    nodes        BIGINT,
    req_nodes    BIGINT,
    timelimit_s  BIGINT,
    recorded_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (remote_id, job_id),
    FOREIGN KEY (remote_id) REFERENCES remote_runs (remote_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
