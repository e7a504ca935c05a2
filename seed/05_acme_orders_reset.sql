-- Removes the ACME accounts, orders, authorizations and challenges acme_orders created.
--
-- Each acme_orders VU registers a fresh account key per run (account id "acme-acc-" + its
-- thumbprint, so no id prefix marks it); the scenario's accounts, and the preflight probe's,
-- carry the contact 'mailto:loadtest-acme@example.test'. Left behind, their active orders
-- would grow the per-account order COUNT certctl runs on every new-order. None of certctl's
-- ACME foreign keys cascade, so children go first (contract section 8.5). audit_events rows
-- stay (append-only); nonces are global and left to certctl's GC.
-- No parameters: psql -1 -f seed/05_acme_orders_reset.sql

DELETE FROM acme_challenges
 WHERE authz_id IN (SELECT z.authz_id FROM acme_authorizations z
                      JOIN acme_orders o ON o.order_id = z.order_id
                      JOIN acme_accounts a ON a.account_id = o.account_id
                     WHERE 'mailto:loadtest-acme@example.test' = ANY (a.contact));

DELETE FROM acme_authorizations
 WHERE order_id IN (SELECT o.order_id FROM acme_orders o
                      JOIN acme_accounts a ON a.account_id = o.account_id
                     WHERE 'mailto:loadtest-acme@example.test' = ANY (a.contact));

DELETE FROM acme_orders
 WHERE account_id IN (SELECT account_id FROM acme_accounts
                       WHERE 'mailto:loadtest-acme@example.test' = ANY (contact));

DELETE FROM acme_accounts
 WHERE 'mailto:loadtest-acme@example.test' = ANY (contact);
