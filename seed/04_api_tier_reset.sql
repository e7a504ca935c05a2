-- Removes the certificates the api_tier scenario created (certctl's k6 issuance_acceptance).
--
-- api_tier POSTs /api/v1/certificates with names 'loadtest-api-<run>-<n>'; certctl stores them
-- as Pending with a zero expires_at and generated ids ('cert-<nanos>-<n>'), so only the name
-- prefix marks them. Left behind they would grow the list endpoint's COUNT(*) and join the
-- t-platform / iss-local population criteria-mode bulk renew sees (contract section 10.1).
-- Their jobs and mappings cascade. No parameters: psql -f seed/04_api_tier_reset.sql

DELETE FROM managed_certificates
 WHERE name LIKE 'loadtest-api-%';
