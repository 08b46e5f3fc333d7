-- Results applied since a time, with their state and run, read from the
-- index alone: the table page's pace (items finished per label in the last
-- 24 hours) without reading every result.
CREATE INDEX results_applied ON results (applied_at, state, remote_id);
