-- Certificates with versions that certctl's ARI endpoint can find (scenario acme_burst).
--
-- Parameter :ari_size (1..1000000). Runs unchanged through SQLAlchemy or psql
-- (psql -v ari_size=1000 -f seed/03_ari_certs.sql) against a real certctl database or the
-- stand-in. Idempotent; a smaller size removes the surplus. Only managed_certificates rows with
-- id 'mc-loadtest-ari-%' and name 'loadtest-ari-%', and their certificate_versions
-- ('cv-loadtest-ari-%'), are touched.
--
-- ARI (contract section 7.4) ignores the AKI and matches the serial as lowercase hex with no
-- leading zeros, so each serial here is 'ace0' followed by the index as 12 hex digits: it never
-- starts with 0. The request id is base64url(any AKI bytes) '.' base64url(bytes of the serial),
-- which workbench.seed.ari_cert_ids() computes. The window uses managed_certificates.expires_at
-- (1..30 days ahead) and rp-standard's 30-day window, so start = now. fingerprint_sha256 is
-- unique; pem_chain is a placeholder certctl never parses on this path. The certificates are on
-- iss-local: ARI searches under ONE enabled issuer picked at random per request, so every other
-- issuer must be disabled for deterministic answers (workbench preflight warns about this).
--
-- Ids: five digits, zero-padded, up to 99999 (mc-loadtest-ari-00001); the plain number above
-- (mc-loadtest-ari-100000). lpad alone would truncate a longer number, hence greatest().

DELETE FROM managed_certificates
 WHERE id LIKE 'mc-loadtest-ari-%'
   AND name LIKE 'loadtest-ari-%'
   -- {1,18}: a longer number would overflow bigint; such a row is not ours to delete
   AND (CASE WHEN id ~ '^mc-loadtest-ari-[0-9]{1,18}$' THEN substring(id FROM 17)::bigint END)
       > :ari_size;

INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id,
                                  issuer_id, renewal_policy_id, certificate_profile_id, status,
                                  expires_at, tags, last_renewal_at, last_deployment_at,
                                  revoked_at, revocation_reason, source, created_at, updated_at)
SELECT 'mc-loadtest-ari-' || n,
       'loadtest-ari-' || n,
       'loadtest-ari-' || n || '.example.test',
       ARRAY['loadtest-ari-' || n || '.example.test'],
       'production',
       'o-alice',
       't-platform',
       'iss-local',
       'rp-standard',
       NULL,
       'Active',
       date_trunc('second', now()) + make_interval(days => 1 + (i - 1) % 30),
       jsonb_build_object('batch', 'ari'),
       NULL,
       NULL,
       NULL,
       NULL,
       '',
       now(),
       now()
  FROM generate_series(1, :ari_size) AS i,
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
       updated_at = EXCLUDED.updated_at
 WHERE managed_certificates.name LIKE 'loadtest-ari-%';

INSERT INTO certificate_versions (id, certificate_id, serial_number, not_before, not_after,
                                  fingerprint_sha256, pem_chain, csr_pem, created_at,
                                  key_algorithm, key_size)
SELECT 'cv-loadtest-ari-' || n,
       'mc-loadtest-ari-' || n,
       'ace0' || lpad(to_hex(i), 12, '0'),
       date_trunc('second', now()) - interval '60 days',
       date_trunc('second', now()) + make_interval(days => 1 + (i - 1) % 30),
       encode(sha256(convert_to('loadtest-ari-' || n, 'UTF8')), 'hex'),
       '-----BEGIN CERTIFICATE-----' || chr(10)
           || 'bG9hZHRlc3QgZml4dHVyZSwgbm90IGEgY2VydGlmaWNhdGU=' || chr(10)
           || '-----END CERTIFICATE-----' || chr(10),
       NULL,
       now(),
       'ECDSA',
       256
  FROM generate_series(1, :ari_size) AS i,
       LATERAL (SELECT lpad(i::text, greatest(length(i::text), 5), '0') AS n) AS padded
ON CONFLICT (id) DO UPDATE
   SET serial_number = EXCLUDED.serial_number,
       not_before = EXCLUDED.not_before,
       not_after = EXCLUDED.not_after,
       fingerprint_sha256 = EXCLUDED.fingerprint_sha256,
       pem_chain = EXCLUDED.pem_chain,
       created_at = EXCLUDED.created_at
 WHERE certificate_versions.id LIKE 'cv-loadtest-ari-%'
   AND certificate_versions.certificate_id LIKE 'mc-loadtest-ari-%';
