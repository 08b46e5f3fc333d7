DROP TABLE transfer_rates;
DROP TABLE processes;
