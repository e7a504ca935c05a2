-- Reset of the bulk-renewal fleet between runs, without re-seeding it.
--
-- certctl's bulk renew flips each certificate it renews to RenewalInProgress and skips it on
-- every later call (contract section 5, "Idempotency"); this puts the fleet back: fixture jobs
-- removed (issuance_approval_requests cascade with them in certctl), status back to Active.
-- Only rows of seed/01_bulk_renewal_certs.sql are touched. No parameters:
-- psql -f seed/01_bulk_renewal_reset.sql

DELETE FROM jobs
 WHERE certificate_id IN (SELECT id FROM managed_certificates
                           WHERE id LIKE 'mc-loadtest-bulk-%' AND name LIKE 'loadtest-bulk-%');

UPDATE managed_certificates
   SET status = 'Active'
 WHERE id LIKE 'mc-loadtest-bulk-%'
   AND name LIKE 'loadtest-bulk-%'
   AND status <> 'Active';
