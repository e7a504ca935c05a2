-- Agent fleet for the agent_storm scenario (certctl's 5,000-agent heartbeat storm).
--
-- Parameter :fleet_size (1..1000000). Runs unchanged through SQLAlchemy (bind parameter) or psql
-- (psql -v fleet_size=5000 -f seed/02_agent_fleet.sql) against a real certctl database or the
-- workbench's stand-in. Idempotent: seeding again resets the same rows; a smaller size removes
-- the surplus, so one fleet of exactly :fleet_size agents remains. Only rows whose id starts with
-- 'ag-loadtest-' and whose name starts with 'loadtest-agent-' are touched.
--
-- Every column certctl scans into a Go string is non-NULL (a NULL os, architecture, ip_address or
-- version makes the heartbeat's row scan fail with 500). Status is TitleCase 'Online', as certctl
-- writes it; lowercase would cost every heartbeat an extra full-row UPDATE.
--
-- Ids: five digits, zero-padded, up to 99999 (ag-loadtest-00001, as other code and existing
-- databases expect); the plain number above (ag-loadtest-100000). lpad alone would truncate a
-- longer number, hence greatest().

DELETE FROM agents
 WHERE id LIKE 'ag-loadtest-%'
   AND name LIKE 'loadtest-agent-%'
   -- {1,18}: a longer number would overflow bigint; such a row is not ours to delete
   AND (CASE WHEN id ~ '^ag-loadtest-[0-9]{1,18}$' THEN substring(id FROM 13)::bigint END)
       > :fleet_size;

INSERT INTO agents (id, name, hostname, status, last_heartbeat_at, registered_at, api_key_hash,
                    os, architecture, ip_address, version, retired_at, retired_reason)
SELECT 'ag-loadtest-' || n,
       'loadtest-agent-' || n,
       'loadtest-agent-' || n || '.example.test',
       'Online',
       -- staggered over the previous 60 s, as a fleet on certctl's 60 s cadence would be
       now() - make_interval(secs => 60.0 * (i - 1) / :fleet_size),
       now(),
       'loadtest-not-a-real-key-hash',
       -- 80 % linux, 10 % windows, 10 % darwin
       CASE i % 10 WHEN 8 THEN 'windows' WHEN 9 THEN 'darwin' ELSE 'linux' END,
       CASE i % 10 WHEN 9 THEN 'arm64' ELSE 'amd64' END,
       '198.51.100.' || (i % 254 + 1),
       '1.0.0',
       NULL,
       NULL
  FROM generate_series(1, :fleet_size) AS i,
       LATERAL (SELECT lpad(i::text, greatest(length(i::text), 5), '0') AS n) AS padded
ON CONFLICT (id) DO UPDATE
   SET name = EXCLUDED.name,
       hostname = EXCLUDED.hostname,
       status = EXCLUDED.status,
       last_heartbeat_at = EXCLUDED.last_heartbeat_at,
       api_key_hash = EXCLUDED.api_key_hash,
       os = EXCLUDED.os,
       architecture = EXCLUDED.architecture,
       ip_address = EXCLUDED.ip_address,
       version = EXCLUDED.version,
       retired_at = NULL,
       retired_reason = NULL
 WHERE agents.name LIKE 'loadtest-agent-%';
