DROP INDEX results_applied ON results;
