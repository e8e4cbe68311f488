package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

const manifestVersionColumns = `version, operation, job_id, actor, summary, created_at`

func scanManifestVersion(row pgx.Row) (ManifestVersion, error) {
	var v ManifestVersion
	err := row.Scan(&v.Version, &v.Operation, &v.JobID, &v.Actor, &v.Summary, &v.CreatedAt)
	v.CreatedAt = v.CreatedAt.UTC()
	return v, err
}

// ManifestVersions returns the recorded versions of a dataset's manifest,
// newest first: at most limit of them (ListLimitDefault when limit <= 0,
// never more than ListLimitMax).
func (s *Store) ManifestVersions(ctx context.Context, datasetID int64, limit int) ([]ManifestVersion, error) {
	if limit <= 0 {
		limit = ListLimitDefault
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+manifestVersionColumns+` FROM timestore.manifest_versions
		WHERE dataset_id = $1
		ORDER BY version DESC
		LIMIT $2`, datasetID, min(limit, ListLimitMax))
	versions, err := collect(rows, err, scanManifestVersion)
	if err != nil {
		return nil, fmt.Errorf("manifest versions of dataset %d: %w", datasetID, err)
	}
	return versions, nil
}

// insertManifestVersionSQL records one version of a dataset's manifest.
const insertManifestVersionSQL = `
	INSERT INTO timestore.manifest_versions (dataset_id, version, operation, job_id, actor, summary)
	VALUES ($1, $2, $3, $4, $5, $6)`

// insertManifestVersion records one version of a dataset's manifest.
func insertManifestVersion(ctx context.Context, tx pgx.Tx, datasetID, version int64, op string, jobID *int64, actor string, summary map[string]any) error {
	_, err := tx.Exec(ctx, insertManifestVersionSQL, datasetID, version, op, jobID, actor, summary)
	if err != nil {
		return fmt.Errorf("record manifest version %d: %w", version, err)
	}
	return nil
}

// queueManifestVersion queues, in a manifest change's pipeline, the
// statement recording one version of a dataset's manifest.
func queueManifestVersion(p *commitPipeline, datasetID, version int64, op string, jobID *int64, actor string, summary map[string]any) {
	p.exec(fmt.Sprintf("record manifest version %d", version), insertManifestVersionSQL,
		datasetID, version, op, jobID, actor, summary)
}
