DROP INDEX results_applied;
