DROP TRIGGER result_hours_insert;
DROP TABLE result_hours;
DROP INDEX remote_components_failures ON remote_components;
DROP INDEX transfer_rates_at ON transfer_rates;
DROP INDEX work_items_updated ON work_items;
DROP TRIGGER run_tallies_delete;
DROP TRIGGER run_tallies_update;
DROP TRIGGER run_tallies_insert;
DROP TABLE run_tallies;
