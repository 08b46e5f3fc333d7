ALTER TABLE remote_runs DROP COLUMN state_since;
