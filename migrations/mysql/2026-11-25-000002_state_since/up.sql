-- When a run entered its current state (for "how long has it sat there").
ALTER TABLE remote_runs ADD COLUMN state_since DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE remote_runs SET state_since = updated_at;
