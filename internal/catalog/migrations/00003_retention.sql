-- Retention: holds that keep time ranges of a dataset from being pruned, and
-- the bookkeeping of the sweeper's two phases.
--
-- The sweeper marks a removed partition purged (purged_at) in one
-- transaction, then deletes its object after the commit and records that in
-- object_deleted_at. A purged partition whose object_deleted_at is NULL is an
-- object still to delete (the sweeper crashed or the target failed between
-- the two phases); every sweep finishes those first, and "already gone"
-- counts as deleted, so each phase can be repeated safely.

-- +goose Up
ALTER TABLE timestore.partitions ADD COLUMN object_deleted_at timestamptz;
ALTER TABLE timestore.partitions ADD CONSTRAINT partitions_object_deleted_purged
    CHECK (object_deleted_at IS NULL OR purged_at IS NOT NULL);

-- Purged partitions whose object the sweeper has yet to delete.
CREATE INDEX partitions_purge_pending ON timestore.partitions (dataset_id)
    WHERE purged_at IS NOT NULL AND object_deleted_at IS NULL;

-- A hold keeps retention from removing any partition that overlaps
-- [time_from, time_to) until it is released. Rows are never deleted: a
-- released hold keeps who released it and when.
CREATE TABLE timestore.retention_holds (
    id          bigserial   PRIMARY KEY,
    dataset_id  bigint      NOT NULL REFERENCES timestore.datasets (id),
    time_from   timestamptz NOT NULL,
    time_to     timestamptz NOT NULL,
    reason      text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    released_by text,
    CHECK (time_from < time_to),
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);

CREATE INDEX retention_holds_active ON timestore.retention_holds (dataset_id, time_from)
    WHERE released_at IS NULL;

-- +goose Down
DROP TABLE timestore.retention_holds;
DROP INDEX timestore.partitions_purge_pending;
ALTER TABLE timestore.partitions DROP CONSTRAINT partitions_object_deleted_purged;
ALTER TABLE timestore.partitions DROP COLUMN object_deleted_at;
