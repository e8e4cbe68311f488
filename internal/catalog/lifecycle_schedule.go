package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ScheduleState is the lifecycle scheduler's memory of one (dataset, job
// kind): the schedule it last saw in the dataset's policy, when the kind is
// next due, and what it last enqueued.
type ScheduleState struct {
	DatasetID int64
	Kind      string
	// Schedule is the schedule string (cron or "@every …") NextRunAt was
	// computed from; a policy with another string makes the scheduler
	// recompute NextRunAt.
	Schedule  string
	NextRunAt time.Time
	// LastEnqueuedAt and LastJobID describe the last job the scheduler
	// inserted; nil until it inserted one.
	LastEnqueuedAt *time.Time
	LastJobID      *int64
	UpdatedAt      time.Time
}

const scheduleColumns = `dataset_id, kind, schedule, next_run_at, last_enqueued_at, last_job_id, updated_at`

func scanSchedule(row pgx.Row) (ScheduleState, error) {
	var st ScheduleState
	err := row.Scan(&st.DatasetID, &st.Kind, &st.Schedule, &st.NextRunAt, &st.LastEnqueuedAt, &st.LastJobID, &st.UpdatedAt)
	st.NextRunAt, st.UpdatedAt = st.NextRunAt.UTC(), st.UpdatedAt.UTC()
	st.LastEnqueuedAt = utcPtr(st.LastEnqueuedAt)
	return st, err
}

// ScheduleTx is a transaction over the scheduler's state, handed to the
// function given to Store.InScheduleTx. Rows claimed in it stay locked until
// it ends, so that several timestore processes ticking at once never act on
// the same (dataset, kind) twice.
type ScheduleTx struct {
	tx pgx.Tx
}

// Tx returns the underlying transaction, for River's InsertTx: a job
// inserted in it is enqueued only if the state change commits.
func (t *ScheduleTx) Tx() Tx { return t.tx }

// Claim locks the state of (datasetID, kind) for the rest of the transaction
// and returns it. If there is none, it stores init (its DatasetID and Kind
// are set from the arguments) and returns it with created = true. If another
// transaction holds the row, Claim does not wait: it returns ok = false and
// the caller leaves that (dataset, kind) to the other transaction. (It waits
// only while another transaction is creating the same row.)
func (t *ScheduleTx) Claim(ctx context.Context, datasetID int64, kind string, init ScheduleState) (st ScheduleState, created, ok bool, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("claim schedule of dataset %d kind %s: %w", datasetID, kind, err)
		}
	}()
	st, err = scanSchedule(t.tx.QueryRow(ctx, `
		SELECT `+scheduleColumns+` FROM timestore.lifecycle_schedule
		WHERE dataset_id = $1 AND kind = $2
		FOR UPDATE SKIP LOCKED`, datasetID, kind))
	if err == nil {
		return st, false, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return ScheduleState{}, false, false, err
	}
	// No row, or a locked one. A plain read tells them apart without waiting
	// (an INSERT … ON CONFLICT would wait for the holder to finish).
	var exists bool
	if err := t.tx.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM timestore.lifecycle_schedule WHERE dataset_id = $1 AND kind = $2)`,
		datasetID, kind).Scan(&exists); err != nil {
		return ScheduleState{}, false, false, err
	}
	if exists {
		return ScheduleState{}, false, false, nil
	}
	st, err = scanSchedule(t.tx.QueryRow(ctx, `
		INSERT INTO timestore.lifecycle_schedule (dataset_id, kind, schedule, next_run_at, last_enqueued_at, last_job_id)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (dataset_id, kind) DO NOTHING
		RETURNING `+scheduleColumns,
		datasetID, kind, init.Schedule, init.NextRunAt, init.LastEnqueuedAt, init.LastJobID))
	switch {
	case err == nil:
		return st, true, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return ScheduleState{}, false, false, nil // another transaction created it meanwhile
	default:
		return ScheduleState{}, false, false, err
	}
}

// Save writes st, which must have been claimed in this transaction.
func (t *ScheduleTx) Save(ctx context.Context, st ScheduleState) error {
	tag, err := t.tx.Exec(ctx, `
		UPDATE timestore.lifecycle_schedule
		SET schedule = $3, next_run_at = $4, last_enqueued_at = $5, last_job_id = $6, updated_at = now()
		WHERE dataset_id = $1 AND kind = $2`,
		st.DatasetID, st.Kind, st.Schedule, st.NextRunAt, st.LastEnqueuedAt, st.LastJobID)
	if err == nil && tag.RowsAffected() != 1 {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("save schedule of dataset %d kind %s: %w", st.DatasetID, st.Kind, err)
	}
	return nil
}

// InScheduleTx runs fn in a read-committed transaction over the scheduler's
// state, committing when fn returns nil.
func (s *Store) InScheduleTx(ctx context.Context, fn func(ctx context.Context, tx *ScheduleTx) error) error {
	return s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		return fn(ctx, &ScheduleTx{tx: tx})
	})
}

// ScheduleStates returns the scheduler's state rows of a dataset, by kind.
func (s *Store) ScheduleStates(ctx context.Context, datasetID int64) ([]ScheduleState, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+scheduleColumns+` FROM timestore.lifecycle_schedule
		WHERE dataset_id = $1 ORDER BY kind`, datasetID)
	states, err := collect(rows, err, scanSchedule)
	if err != nil {
		return nil, fmt.Errorf("schedule states of dataset %d: %w", datasetID, err)
	}
	return states, nil
}

// RetainSchedules removes the scheduler's state rows of a dataset whose kind
// is not in kinds (the kinds its policy no longer schedules) and returns how
// many it removed.
func (s *Store) RetainSchedules(ctx context.Context, datasetID int64, kinds []string) (int64, error) {
	if kinds == nil {
		kinds = []string{}
	}
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM timestore.lifecycle_schedule
		WHERE dataset_id = $1 AND NOT (kind = ANY($2))`, datasetID, kinds)
	if err != nil {
		return 0, fmt.Errorf("retain schedules of dataset %d: %w", datasetID, err)
	}
	return tag.RowsAffected(), nil
}

// PruneDeletedSchedules removes the scheduler's state rows of deleted
// datasets and returns how many it removed.
func (s *Store) PruneDeletedSchedules(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM timestore.lifecycle_schedule ls
		USING timestore.datasets d
		WHERE d.id = ls.dataset_id AND d.deleted_at IS NOT NULL`)
	if err != nil {
		return 0, fmt.Errorf("prune schedules of deleted datasets: %w", err)
	}
	return tag.RowsAffected(), nil
}
