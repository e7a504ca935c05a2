-- Bulk-renewal fleet for the bulk_renewal scenario (certctl's scale-tier scenario A).
--
-- Parameter :bulk_size (1..1000000; certctl's plan uses 10000). Runs unchanged through SQLAlchemy
-- (bind parameter) or psql (psql -v bulk_size=10000 -f seed/01_bulk_renewal_certs.sql) against a
-- real certctl database or the workbench's stand-in. Idempotent: seeding again resets the same
-- rows (status Active, no jobs); a smaller size removes the surplus. Only managed_certificates
-- rows whose id starts with 'mc-loadtest-bulk-' and whose name starts with 'loadtest-bulk-', and
-- jobs of those certificates, are touched.
--
-- Shape (contract sections 5 and 8.9): status TitleCase 'Active' (bulk renew skips only
-- Archived/Revoked/Expired/RenewalInProgress); parents iss-local, o-alice, t-platform,
-- rp-standard, which certctl's demo seed creates; every column certctl scans is non-NULL
-- (environment and expires_at NULLs make list and bulk-renew answer 500); tags a string-to-string
-- object. created_at lies 700 days back, one millisecond apart, so criteria mode (which takes the
-- 50 oldest rows) matches fixture rows before the demo seed's backdated certificates.
-- expires_at is spread evenly over the next 30 days: inside certctl's 31-day renewal-check
-- window, so a scheduler renewal check would grab them (keep its interval long; see seed/README).
--
-- Ids: five digits, zero-padded, up to 99999 (mc-loadtest-bulk-00001, as other code and existing
-- databases expect); the plain number above (mc-loadtest-bulk-100000). lpad alone would truncate
-- a longer number, hence greatest(). One INSERT ... ON CONFLICT measured cheaper than an UPDATE
-- plus an INSERT of the missing rows, for first loads and re-seeds alike (1,000,000 rows: see
-- benchmarks/bench_seeding.py).

DELETE FROM managed_certificates
 WHERE id LIKE 'mc-loadtest-bulk-%'
   AND name LIKE 'loadtest-bulk-%'
   -- {1,18}: a longer number would overflow bigint; such a row is not ours to delete
   AND (CASE WHEN id ~ '^mc-loadtest-bulk-[0-9]{1,18}$' THEN substring(id FROM 18)::bigint END)
       > :bulk_size;

DELETE FROM jobs
 WHERE certificate_id IN (SELECT id FROM managed_certificates
                           WHERE id LIKE 'mc-loadtest-bulk-%' AND name LIKE 'loadtest-bulk-%');

INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id,
                                  issuer_id, renewal_policy_id, certificate_profile_id, status,
                                  expires_at, tags, last_renewal_at, last_deployment_at,
                                  revoked_at, revocation_reason, source, created_at, updated_at)
SELECT 'mc-loadtest-bulk-' || n,
       'loadtest-bulk-' || n,
       'loadtest-bulk-' || n || '.example.test',
       ARRAY['loadtest-bulk-' || n || '.example.test'],
       'production',
       'o-alice',
       't-platform',
       'iss-local',
       'rp-standard',
       NULL,
       'Active',
       now() + make_interval(secs => 2592000.0 * (i - 0.5) / :bulk_size),
       '{"batch": "bulk-renewal"}'::jsonb,
       NULL,
       NULL,
       NULL,
       NULL,
       '',
       now() - interval '700 days' + make_interval(secs => i / 1000.0),
       now()
  FROM generate_series(1, :bulk_size) AS i,
       LATERAL (SELECT lpad(i::text, greatest(length(i::text), 5), '0') AS n) AS padded
ON CONFLICT (id) DO UPDATE
   SET name = EXCLUDED.name,
       common_name = EXCLUDED.common_name,
       sans = EXCLUDED.sans,
       environment = EXCLUDED.environment,
       owner_id = EXCLUDED.owner_id,
       team_id = EXCLUDED.team_id,
       issuer_id = EXCLUDED.issuer_id,
       renewal_policy_id = EXCLUDED.renewal_policy_id,
       certificate_profile_id = EXCLUDED.certificate_profile_id,
       status = EXCLUDED.status,
       expires_at = EXCLUDED.expires_at,
       tags = EXCLUDED.tags,
       last_renewal_at = NULL,
       last_deployment_at = NULL,
       revoked_at = NULL,
       revocation_reason = NULL,
       source = EXCLUDED.source,
       created_at = EXCLUDED.created_at,
       updated_at = EXCLUDED.updated_at
 WHERE managed_certificates.name LIKE 'loadtest-bulk-%';
