-- Leases remember the node that took them, so that a process restarted on a
-- node's data directory releases at once what its dead predecessor held
-- (catalog.ReleaseNodeLeases) instead of letting those leases block sweeps
-- until they expire.
--
-- The node is the session setting timestore.node of the connection that
-- inserts the lease (catalog.WithLeaseNode puts it in the database URL of
-- `timestore serve`); NULL for connections without it.

-- +goose Up
ALTER TABLE timestore.query_leases
    ADD COLUMN node text DEFAULT nullif(current_setting('timestore.node', true), '');
CREATE INDEX query_leases_node ON timestore.query_leases (node) WHERE node IS NOT NULL;

-- +goose Down
DROP INDEX timestore.query_leases_node;
ALTER TABLE timestore.query_leases DROP COLUMN node;
