-- Tool processes at work (exec, poll, prepare, xfer): who, where, and a
-- heartbeat, so `remotetool wait` knows when they have all ended and a
-- dead one's leases can be reclaimed.
CREATE TABLE processes (
    id           BIGSERIAL PRIMARY KEY,
    tool         TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL,
    command      TEXT
);
CREATE INDEX processes_holder ON processes (host, pid);

-- Measured transfer rates per front end, for the expiry forecast.
CREATE TABLE transfer_rates (
    id        BIGSERIAL PRIMARY KEY,
    host      TEXT NOT NULL,
    direction TEXT NOT NULL,
    bytes     BIGINT NOT NULL,
    seconds   DOUBLE PRECISION NOT NULL,
    at        TIMESTAMP NOT NULL
);
CREATE INDEX transfer_rates_host ON transfer_rates (host, direction, id);
