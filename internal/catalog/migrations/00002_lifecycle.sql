-- The lifecycle scheduler's state: per dataset and job kind, the schedule it
-- last saw and when the kind is next due. River's own tables (river_job, ...)
-- are created by River's migrations in the default schema of this database.

-- +goose Up
CREATE TABLE timestore.lifecycle_schedule (
    dataset_id       bigint      NOT NULL REFERENCES timestore.datasets (id) ON DELETE CASCADE,
    kind             text        NOT NULL,
    schedule         text        NOT NULL,
    next_run_at      timestamptz NOT NULL,
    last_enqueued_at timestamptz,
    last_job_id      bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, kind)
);

-- +goose Down
DROP TABLE timestore.lifecycle_schedule;
