package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Export is one version of the export of one window of a dataset.
type Export struct {
	ID              int64      `json:"id"`
	Target          string     `json:"target"`
	Window          string     `json:"window"`
	WindowLabel     string     `json:"window_label"`
	WindowStart     time.Time  `json:"window_start"`
	WindowEnd       time.Time  `json:"window_end"`
	Version         int        `json:"version"`
	State           string     `json:"state"`
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

// Exports lists a dataset's export versions, in one state (writing,
// verified, failed, superseded) or all when state is "".
func (c *Client) Exports(ctx context.Context, dataset, state string) ([]Export, error) {
	path := "/v1/datasets/" + url.PathEscape(dataset) + "/exports"
	if state != "" {
		path += "?" + url.Values{"state": {state}}.Encode()
	}
	var out struct {
		Exports []Export `json:"exports"`
	}
	err := c.Do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Exports, err
}
