ALTER TABLE remote_runs DROP COLUMN poll_error;
ALTER TABLE remote_runs DROP COLUMN poll_failed_since;
ALTER TABLE remote_runs DROP COLUMN poll_failures;
ALTER TABLE remote_runs DROP COLUMN fault_count;
ALTER TABLE remote_runs DROP COLUMN held_until;
