DROP TABLE remote_jobs;
