-- Runs held back from `--next` after a fault (until a time, or until a
-- person acts), how many faults in a row, and polls that keep failing.
ALTER TABLE remote_runs ADD COLUMN held_until DATETIME(6);
ALTER TABLE remote_runs ADD COLUMN fault_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE remote_runs ADD COLUMN poll_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE remote_runs ADD COLUMN poll_failed_since DATETIME(6);
ALTER TABLE remote_runs ADD COLUMN poll_error LONGTEXT;
