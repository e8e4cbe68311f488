package api

import (
	"net/http"
	"time"

	"timestore/internal/catalog"
)

// ExportInfo is one entry of GET /v1/datasets/{name}/exports: one version
// of the export of one window.
type ExportInfo struct {
	ID     int64  `json:"id"`
	Target string `json:"target"`
	// Window is the export window kind (day, month); WindowLabel its label
	// in keys (window=LABEL).
	Window      string    `json:"window"`
	WindowLabel string    `json:"window_label"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Version     int       `json:"version"`
	// State is writing, verified, failed or superseded.
	State string `json:"state"`
	// Keys are the data files; ManifestKey the window's _manifest.json.
	Keys            []string   `json:"keys"`
	ManifestKey     string     `json:"manifest_key"`
	TimeMin         *time.Time `json:"time_min"`
	TimeMax         *time.Time `json:"time_max"`
	RowCount        int64      `json:"row_count"`
	SizeBytes       int64      `json:"size_bytes"`
	NewRows         int64      `json:"new_rows"`
	Checksum        string     `json:"checksum"`
	ManifestVersion int64      `json:"manifest_version"`
	Partitions      int        `json:"partitions"`
	Attempts        int        `json:"attempts"`
	Error           string     `json:"error,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	VerifiedAt      *time.Time `json:"verified_at,omitempty"`
}

// exportRoutes registers the data-plane route of the exports.
func (s *Server) exportRoutes(handle handleFunc) {
	handle("GET /v1/datasets/{name}/exports", s.listExports, s.requireToken)
}

// listExports answers GET /v1/datasets/{name}/exports[?state=S] with every
// export version of a dataset, ordered by target, window kind, window and
// version.
func (s *Server) listExports(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	xs, err := s.opts.Store.ListExports(r.Context(), name, r.URL.Query().Get("state"))
	if err != nil {
		return err
	}
	out := make([]ExportInfo, len(xs))
	for i, x := range xs {
		out[i] = exportInfo(x)
	}
	writeJSON(w, http.StatusOK, map[string]any{"exports": out})
	return nil
}

func exportInfo(x catalog.Export) ExportInfo {
	return ExportInfo{
		ID: x.ID, Target: x.Target, Window: x.Window, WindowLabel: x.WindowLabel, WindowStart: x.WindowStart,
		WindowEnd: x.WindowEnd, Version: x.Version, State: x.State, Keys: x.Keys, ManifestKey: x.ManifestKey,
		TimeMin: x.TimeMin, TimeMax: x.TimeMax, RowCount: x.RowCount, SizeBytes: x.SizeBytes, NewRows: x.NewRows,
		Checksum: x.Checksum, ManifestVersion: x.ManifestVersion, Partitions: len(x.PartitionIDs),
		Attempts: x.Attempts, Error: x.Error, CreatedAt: x.CreatedAt, VerifiedAt: x.VerifiedAt,
	}
}
