-- The catalog schema: datasets, their partitions (the manifest), the history of
-- manifest versions, the audit log, idempotency records and query leases.
-- Every timestamp is timestamptz.

-- +goose Up
CREATE SCHEMA IF NOT EXISTS timestore;

CREATE TABLE timestore.datasets (
    id               bigserial   PRIMARY KEY,
    name             text        NOT NULL,
    columns          jsonb       NOT NULL,
    time_column      text        NOT NULL,
    partition_window text        NOT NULL CHECK (partition_window IN ('hour', 'day', 'month')),
    target           text        NOT NULL,
    policy           jsonb       NOT NULL DEFAULT '{}',
    manifest_version bigint      NOT NULL DEFAULT 0 CHECK (manifest_version >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

-- A name is unique among live datasets; a deleted dataset's name can be reused.
CREATE UNIQUE INDEX datasets_name_live ON timestore.datasets (name) WHERE deleted_at IS NULL;

CREATE TABLE timestore.partitions (
    id                 bigserial   PRIMARY KEY,
    dataset_id         bigint      NOT NULL REFERENCES timestore.datasets (id),
    window_start       timestamptz NOT NULL,
    time_min           timestamptz NOT NULL,
    time_max           timestamptz NOT NULL,
    row_count          bigint      NOT NULL CHECK (row_count >= 0),
    size_bytes         bigint      NOT NULL CHECK (size_bytes >= 0),
    target             text        NOT NULL,
    object_key         text        NOT NULL,
    checksum           text        NOT NULL,
    stats              jsonb,
    level              integer     NOT NULL DEFAULT 0 CHECK (level >= 0),
    no_compact         boolean     NOT NULL DEFAULT false,
    added_in_version   bigint      NOT NULL,
    removed_in_version bigint,
    removed_at         timestamptz,
    purged_at          timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (time_min <= time_max),
    CHECK ((removed_in_version IS NULL) = (removed_at IS NULL)),
    CHECK (removed_in_version IS NULL OR removed_in_version > added_in_version),
    CHECK (purged_at IS NULL OR removed_in_version IS NOT NULL)
);

-- The live manifest of a dataset, pruned by time: one index range scan.
CREATE INDEX partitions_live ON timestore.partitions (dataset_id, time_min)
    WHERE removed_in_version IS NULL;
-- The manifest at an older version: added_in_version <= v, then filter on removal.
CREATE INDEX partitions_added ON timestore.partitions (dataset_id, added_in_version);
-- Removed, not yet purged partitions (restore, the sweeper).
CREATE INDEX partitions_removed ON timestore.partitions (dataset_id, removed_at)
    WHERE removed_in_version IS NOT NULL AND purged_at IS NULL;
-- An object is referenced by at most one partition, so deleting the object of a
-- removed partition can never break another one.
CREATE UNIQUE INDEX partitions_object ON timestore.partitions (target, object_key);

CREATE TABLE timestore.manifest_versions (
    dataset_id bigint      NOT NULL REFERENCES timestore.datasets (id),
    version    bigint      NOT NULL,
    operation  text        NOT NULL,
    job_id     bigint,
    actor      text        NOT NULL DEFAULT '',
    summary    jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, version)
);

-- dataset is the dataset's name at the time of the action: rows outlive the
-- dataset, and a name can be reused after a delete.
CREATE TABLE timestore.audit_log (
    id         bigserial   PRIMARY KEY,
    time       timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    dataset    text        NOT NULL DEFAULT '',
    partitions bigint[]    NOT NULL DEFAULT '{}',
    bytes      bigint      NOT NULL DEFAULT 0,
    reason     text        NOT NULL DEFAULT '',
    details    jsonb
);

CREATE INDEX audit_log_dataset ON timestore.audit_log (dataset, id);
CREATE INDEX audit_log_action ON timestore.audit_log (action, id);

-- +goose StatementBegin
CREATE FUNCTION timestore.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timestore.audit_log is append-only (% refused)', TG_OP;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON timestore.audit_log
    FOR EACH ROW EXECUTE FUNCTION timestore.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON timestore.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION timestore.audit_log_append_only();

CREATE TABLE timestore.idempotency_keys (
    dataset_id         bigint      NOT NULL REFERENCES timestore.datasets (id),
    key                text        NOT NULL,
    request_hash       text        NOT NULL,
    manifest_version   bigint      NOT NULL,
    rows_written       bigint      NOT NULL,
    partitions_written bigint      NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, key)
);

CREATE INDEX idempotency_keys_created ON timestore.idempotency_keys (created_at);

CREATE TABLE timestore.query_leases (
    id               bigserial   PRIMARY KEY,
    dataset_id       bigint      NOT NULL REFERENCES timestore.datasets (id),
    manifest_version bigint      NOT NULL,
    holder           text        NOT NULL,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX query_leases_dataset ON timestore.query_leases (dataset_id, expires_at);

-- +goose Down
DROP TABLE timestore.query_leases;
DROP TABLE timestore.idempotency_keys;
DROP TABLE timestore.audit_log;
DROP FUNCTION timestore.audit_log_append_only();
DROP TABLE timestore.manifest_versions;
DROP TABLE timestore.partitions;
DROP TABLE timestore.datasets;
