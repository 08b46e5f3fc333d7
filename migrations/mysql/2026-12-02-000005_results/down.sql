ALTER TABLE remote_runs DROP COLUMN apply_pending;
DROP TABLE consumers;
DROP TABLE results;
