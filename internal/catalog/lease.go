package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
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

// LeaseNodeSetting is the session setting that names the node in every lease
// a connection takes (the lease's node column defaults to it).
const LeaseNodeSetting = "timestore.node"

// WithLeaseNode returns databaseURL (a postgres:// URL or a key=value
// connection string) with the session setting LeaseNodeSetting = node, so
// that every lease taken through a Store opened on it records node. node
// must be made of letters, digits and '-'.
func WithLeaseNode(databaseURL, node string) (string, error) {
	if node == "" || strings.Trim(node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		return "", fmt.Errorf("lease node %q: want letters, digits and '-'", node)
	}
	if !strings.Contains(databaseURL, "://") {
		return databaseURL + " " + LeaseNodeSetting + "=" + node, nil
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "", fmt.Errorf("lease node: parse database url: %w", err)
	}
	q := u.Query()
	q.Set(LeaseNodeSetting, node)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// ReleasedLease is a lease ReleaseNodeLeases ended.
type ReleasedLease struct {
	ID              int64  `json:"id"`
	DatasetID       int64  `json:"dataset_id"`
	Dataset         string `json:"dataset"`
	ManifestVersion int64  `json:"manifest_version"`
	Holder          string `json:"holder"`
}

// ReleaseNodeLeases ends every lease that node took, for a process starting
// on the node's data directory before it takes any lease itself: the leases
// are those of its dead predecessor (one process holds a data directory at a
// time), and its readers are gone, so they no longer protect anything and
// would only hold sweeps back until they expire. The release is audited
// ("lease.release", one row per dataset, actor), in the same transaction.
func (s *Store) ReleaseNodeLeases(ctx context.Context, node, actor string) ([]ReleasedLease, error) {
	if node == "" {
		return nil, nil
	}
	var out []ReleasedLease
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			WITH released AS (
				DELETE FROM timestore.query_leases WHERE node = $1
				RETURNING id, dataset_id, manifest_version, holder
			)
			SELECT r.id, r.dataset_id, d.name, r.manifest_version, r.holder
			FROM released r JOIN timestore.datasets d ON d.id = r.dataset_id
			ORDER BY r.dataset_id, r.id`, node)
		out, err = collect(rows, err, func(row pgx.Row) (ReleasedLease, error) {
			var l ReleasedLease
			err := row.Scan(&l.ID, &l.DatasetID, &l.Dataset, &l.ManifestVersion, &l.Holder)
			return l, err
		})
		if err != nil {
			return err
		}
		for i := 0; i < len(out); {
			j := i
			var leases []ReleasedLease
			for ; j < len(out) && out[j].DatasetID == out[i].DatasetID; j++ {
				leases = append(leases, out[j])
			}
			if err := insertAudit(ctx, tx, AuditEntry{
				Actor:   actor,
				Action:  ActionReleaseLeases,
				Dataset: out[i].Dataset,
				Reason:  "the process that took them died; this process took over its data directory",
				Details: map[string]any{"node": node, "leases": leases},
			}); err != nil {
				return err
			}
			i = j
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("release leases of node %s: %w", node, err)
	}
	return out, nil
}

// ActionReleaseLeases is the audit action of ReleaseNodeLeases.
const ActionReleaseLeases = "lease.release"
