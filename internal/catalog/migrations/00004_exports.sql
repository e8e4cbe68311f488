-- Exports: Parquet snapshots of a dataset's cold windows written to an
-- export target under exports/DATASET/window=LABEL/ (see internal/export).
--
-- One row per attempt-able export version of one window of one series, a
-- series being (dataset, target, window kind). Versions count from 1 per
-- window; a failed attempt keeps its version and the retry reuses the row, so
-- there is one row per (dataset, target, window kind, window start, version).
-- At most one row per window is 'verified' (the current version); the
-- versions it replaced are 'superseded'.
--
-- Export versions are append-only archives: version v lists every file of
-- version v-1 plus the files it adds, and partition_ids (cumulative) lists
-- every partition whose rows in the window are in the export's files. A live
-- partition is covered by an export (for retention's require_export) iff its
-- id is in partition_ids of the window's verified row.

-- +goose Up
CREATE TABLE timestore.exports (
    id                 bigserial   PRIMARY KEY,
    dataset_id         bigint      NOT NULL REFERENCES timestore.datasets (id),
    target             text        NOT NULL,
    window_kind        text        NOT NULL CHECK (window_kind IN ('day', 'month')),
    window_start       timestamptz NOT NULL,
    window_end         timestamptz NOT NULL,
    window_label       text        NOT NULL,
    version            integer     NOT NULL CHECK (version >= 1),
    state              text        NOT NULL CHECK (state IN ('writing', 'verified', 'failed', 'superseded')),
    -- The manifest version of the dataset snapshot the version was written from.
    manifest_version   bigint      NOT NULL,
    -- Every partition whose rows in the window are in the files (cumulative
    -- over versions), and a fingerprint of that set (sha256 of the sorted ids).
    partition_ids      bigint[]    NOT NULL DEFAULT '{}',
    fingerprint        text        NOT NULL DEFAULT '',
    -- The data files of the version, in order, and their descriptions
    -- (key, rows, bytes, checksum, time range, version that wrote it).
    keys               text[]      NOT NULL DEFAULT '{}',
    files              jsonb       NOT NULL DEFAULT '[]',
    manifest_key       text        NOT NULL,
    time_min           timestamptz,
    time_max           timestamptz,
    row_count          bigint      NOT NULL DEFAULT 0 CHECK (row_count >= 0),
    size_bytes         bigint      NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    -- What the version added to the previous one.
    new_rows           bigint      NOT NULL DEFAULT 0 CHECK (new_rows >= 0),
    new_bytes          bigint      NOT NULL DEFAULT 0 CHECK (new_bytes >= 0),
    -- sha256 of the uploaded _manifest.json, which lists every file's checksum.
    checksum           text        NOT NULL DEFAULT '',
    attempts           integer     NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    job_id             bigint,
    actor              text        NOT NULL DEFAULT '',
    error              text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    verified_at        timestamptz,
    CHECK (window_start < window_end),
    CHECK ((state IN ('verified', 'superseded')) = (verified_at IS NOT NULL)),
    CONSTRAINT exports_version UNIQUE (dataset_id, target, window_kind, window_start, version)
);

-- The current (verified) version of each window: at most one.
CREATE UNIQUE INDEX exports_verified ON timestore.exports (dataset_id, target, window_kind, window_start)
    WHERE state = 'verified';
-- Listing a dataset's exports by window.
CREATE INDEX exports_dataset ON timestore.exports (dataset_id, window_start, version);

-- +goose Down
DROP TABLE timestore.exports;
