package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Hold is a retention hold on a dataset's time range [From, To).
type Hold struct {
	ID         int64      `json:"id"`
	Dataset    string     `json:"dataset"`
	From       time.Time  `json:"from"`
	To         time.Time  `json:"to"`
	Reason     string     `json:"reason"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ReleasedAt *time.Time `json:"released_at,omitempty"`
	ReleasedBy string     `json:"released_by,omitempty"`
	// RemovedPartitions, in the answer of AddHold, are partitions in the
	// range that retention removed before the hold and that can still be
	// restored.
	RemovedPartitions []int64 `json:"removed_partitions,omitempty"`
}

// AddHold keeps retention from removing [from, to) of a dataset; from and
// to are RFC 3339 times or dates.
func (c *Client) AddHold(ctx context.Context, dataset, from, to, reason string) (Hold, error) {
	var h Hold
	err := c.Do(ctx, http.MethodPost, "/admin/v1/datasets/"+url.PathEscape(dataset)+"/holds", nil,
		map[string]string{"from": from, "to": to, "reason": reason}, &h)
	return h, err
}

// Holds lists the active holds of a dataset, or of all datasets when
// dataset is ""; released ones too when all is set.
func (c *Client) Holds(ctx context.Context, dataset string, all bool) ([]Hold, error) {
	q := url.Values{}
	if dataset != "" {
		q.Set("dataset", dataset)
	}
	if all {
		q.Set("all", "true")
	}
	var out struct {
		Holds []Hold `json:"holds"`
	}
	err := c.Do(ctx, http.MethodGet, "/admin/v1/holds?"+q.Encode(), nil, nil, &out)
	return out.Holds, err
}

// ReleaseHold releases a hold.
func (c *Client) ReleaseHold(ctx context.Context, id int64) (Hold, error) {
	var h Hold
	err := c.Do(ctx, http.MethodDelete, "/admin/v1/holds/"+strconv.FormatInt(id, 10), nil, nil, &h)
	return h, err
}

// Restored is the answer of a restore.
type Restored struct {
	Dataset         string  `json:"dataset"`
	ManifestVersion int64   `json:"manifest_version"`
	Restored        []int64 `json:"restored"`
	Totals          struct {
		Partitions int64 `json:"partitions"`
		Rows       int64 `json:"rows"`
		Bytes      int64 `json:"bytes"`
	} `json:"totals"`
	RemovedAgainByPolicy []int64  `json:"removed_again_by_policy,omitempty"`
	Notes                []string `json:"notes,omitempty"`
}

// RestorePartitions makes removed, not yet purged partitions live again.
func (c *Client) RestorePartitions(ctx context.Context, dataset string, ids []int64) (Restored, error) {
	var out Restored
	err := c.Do(ctx, http.MethodPost, "/admin/v1/datasets/"+url.PathEscape(dataset)+"/partitions/restore", nil,
		map[string][]int64{"partition_ids": ids}, &out)
	return out, err
}
