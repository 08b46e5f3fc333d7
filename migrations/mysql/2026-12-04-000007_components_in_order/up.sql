-- prepare reads a run's components a page at a time, by component id.
CREATE INDEX remote_components_run_order ON remote_components (remote_id, id);
