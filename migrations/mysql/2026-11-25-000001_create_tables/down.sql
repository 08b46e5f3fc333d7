DROP TABLE offload_locks;
DROP TABLE leases;
DROP TABLE control;
DROP TABLE history;
DROP TABLE remote_components;
DROP TABLE remote_runs;
DROP TABLE work_items;
