-- Tool processes at work (exec, poll, prepare, xfer): who, where, and a
-- heartbeat, so `remotetool wait` knows when they have all ended and a
-- dead one's leases can be reclaimed.
CREATE TABLE processes (
    id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tool         VARCHAR(255) NOT NULL,
    host         VARCHAR(255) NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   DATETIME(6) NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    command      LONGTEXT,
    KEY processes_holder (host, pid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Measured transfer rates per front end, for the expiry forecast.
CREATE TABLE transfer_rates (
    id        BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    host      VARCHAR(255) NOT NULL,
    direction VARCHAR(16) NOT NULL,
    bytes     BIGINT NOT NULL,
    seconds   DOUBLE NOT NULL,
    at        DATETIME(6) NOT NULL,
    KEY transfer_rates_host (host, direction, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
