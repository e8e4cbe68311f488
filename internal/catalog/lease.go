package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Query leases pin a manifest version while a reader scans its files: the
// sweeper keeps every partition live in a pinned version. Expiry is set and
// checked with the database clock, so that the clocks of the nodes do not matter.

// AcquireLease pins version of a dataset for holder until ttl from now and
// returns the lease id. The dataset must exist and have reached version;
// otherwise it returns ErrNotFound.
func (s *Store) AcquireLease(ctx context.Context, datasetID, version int64, holder string, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("acquire lease on dataset %d version %d: %w", datasetID, version,
			invalid(fmt.Errorf("ttl must be positive, not %s", ttl)))
	}
	var id int64
	err := s.pool.QueryRow(ctx, `
		INSERT INTO timestore.query_leases (dataset_id, manifest_version, holder, expires_at)
		SELECT id, $2::bigint, $3, clock_timestamp() + $4 * interval '1 microsecond'
		FROM timestore.datasets
		WHERE id = $1 AND $2 BETWEEN 0 AND manifest_version
		RETURNING id`,
		datasetID, version, holder, ttl.Microseconds()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("acquire lease on dataset %d version %d: %w", datasetID, version, notFound(err))
	}
	return id, nil
}

// RenewLease extends a lease to ttl from now. An expired or released lease
// cannot be renewed (its version may no longer be protected): ErrNotFound.
func (s *Store) RenewLease(ctx context.Context, id int64, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("renew lease %d: %w", id, invalid(fmt.Errorf("ttl must be positive, not %s", ttl)))
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE timestore.query_leases SET expires_at = clock_timestamp() + $2 * interval '1 microsecond'
		WHERE id = $1 AND expires_at > clock_timestamp()`, id, ttl.Microseconds())
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("%w (expired or released)", ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("renew lease %d: %w", id, err)
	}
	return nil
}

// ReleaseLease ends a lease. Releasing an unknown or already released lease
// is not an error.
func (s *Store) ReleaseLease(ctx context.Context, id int64) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM timestore.query_leases WHERE id = $1`, id); err != nil {
		return fmt.Errorf("release lease %d: %w", id, err)
	}
	return nil
}

// PinnedVersions returns the distinct manifest versions of a dataset pinned by
// leases unexpired at now, in ascending order. A zero now means the database
// clock, which is what expiry is set with; prefer it. Leases expired for more
// than an hour are deleted on the way.
func (s *Store) PinnedVersions(ctx context.Context, datasetID int64, now time.Time) ([]int64, error) {
	var at any // NULL: the database clock
	if !now.IsZero() {
		at = now
	}
	var versions []int64
	err := s.inTx(ctx, readCommitted, func(tx Tx) error {
		if _, err := tx.Exec(ctx, `
			DELETE FROM timestore.query_leases
			WHERE dataset_id = $1 AND expires_at < now() - interval '1 hour'`, datasetID); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			SELECT coalesce(array_agg(DISTINCT manifest_version ORDER BY manifest_version), '{}')
			FROM timestore.query_leases
			WHERE dataset_id = $1 AND expires_at > coalesce($2::timestamptz, now())`,
			datasetID, at).Scan(&versions)
	})
	if err != nil {
		return nil, fmt.Errorf("pinned versions of dataset %d: %w", datasetID, err)
	}
	return versions, nil
}

// LeaseKeeper renews and releases leases (a *Store, or an interface over one).
type LeaseKeeper interface {
	RenewLease(ctx context.Context, id int64, ttl time.Duration) error
	ReleaseLease(ctx context.Context, id int64) error
}

// KeepLease renews lease id every ttl/3 until the returned function is
// called, which stops renewing and releases the lease. The function is safe
// to call more than once. Renew and release failures are logged with what
// (e.g. "query", "export") naming the holder; a lease that is not released
// expires by itself after ttl.
func KeepLease(s LeaseKeeper, id int64, ttl time.Duration, what string, log *slog.Logger) (release func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := s.RenewLease(ctx, id, ttl); err != nil {
					log.Warn("renew "+what+" lease", "lease", id, "error", err)
				}
				cancel()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.ReleaseLease(ctx, id); err != nil {
				log.Warn("release "+what+" lease; it expires by itself", "lease", id, "error", err)
			}
		})
	}
}
