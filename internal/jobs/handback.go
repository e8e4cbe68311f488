package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"timestore/internal/catalog"
)

// Hand-back: a process that starts on a data directory returns to the queue,
// at once, the jobs its previous incarnation (same node id, see
// Options.NodeID) left running when it died, instead of leaving them to
// River's rescuer, which waits Options.RescueAfter. River records the client
// that attempts a job in attempted_by; the client id of a Service with a
// node id is "<node id>/<start time>", so a running job whose last attempt
// was made by another client of this node belongs to a dead process: the data
// directory is locked by one process at a time.

// ActionHandBack is the audit action of a job handed back after a restart.
const ActionHandBack = "job.hand_back"

// HandBackErrorPrefix starts the attempt error a handed-back job records.
const HandBackErrorPrefix = "handed back after a restart"

// ClientID returns the River client id of this Service: "<node id>/<start
// time>" with a node id, River's generated one without.
func (s *Service) ClientID() string { return s.client.ID() }

// clientIDFor makes the River client id of a node's incarnation started at t.
func clientIDFor(node string, t time.Time) string {
	return node + "/" + t.UTC().Format("20060102T150405.000000Z")
}

// HandedBack is one job handed back by HandBack.
type HandedBack struct {
	ID      int64  `json:"id"`
	Kind    string `json:"kind"`
	Dataset string `json:"dataset,omitempty"`
	// Previous is the client id of the dead incarnation that ran it.
	Previous string `json:"previous"`
	// State is the job's new state: available (retried at once), discarded
	// (it had used all its attempts) or cancelled (a cancel was pending).
	State string `json:"state"`
}

// HandBack returns to the queue the jobs that earlier incarnations of this
// node left running, as River's rescuer would but without its delay: each
// gets an attempt error saying so (HandBackErrorPrefix) and becomes available
// at once, or discarded when out of attempts, or cancelled when a cancel was
// pending; each hand-back is audited (ActionHandBack) in the same
// transaction. Jobs last attempted by other nodes are never touched. It does
// nothing without Options.NodeID. Start calls it.
func (s *Service) HandBack(ctx context.Context) ([]HandedBack, error) {
	if s.opts.NodeID == "" {
		return nil, nil
	}
	res, err := s.client.JobList(ctx, river.NewJobListParams().
		States(rivertype.JobStateRunning).
		Where("starts_with(attempted_by[array_upper(attempted_by, 1)], @ts_node_prefix) AND attempted_by[array_upper(attempted_by, 1)] <> @ts_client_id",
			river.NamedArgs{"ts_node_prefix": s.opts.NodeID + "/", "ts_client_id": s.ClientID()}).
		First(ListLimitMax))
	if err != nil {
		return nil, fmt.Errorf("hand back jobs of node %s: list: %w", s.opts.NodeID, err)
	}
	var out []HandedBack
	for _, row := range res.Jobs {
		hb, ok, err := s.handBack(ctx, row)
		if err != nil {
			return out, fmt.Errorf("hand back job %d: %w", row.ID, err)
		}
		if !ok {
			continue
		}
		out = append(out, hb)
		s.log.InfoContext(ctx, "job handed back: its process died while running it and this one took over its data directory",
			"job_id", hb.ID, "kind", hb.Kind, "dataset", hb.Dataset, "previous", hb.Previous, "state", hb.State, "attempt", row.Attempt)
	}
	return out, nil
}

// handBack hands back one job in one transaction with its audit row. ok is
// false if the job changed meanwhile (it finished, or it was rescued and runs
// elsewhere): then nothing is written.
func (s *Service) handBack(ctx context.Context, row *rivertype.JobRow) (hb HandedBack, ok bool, err error) {
	if row.AttemptedAt == nil || len(row.AttemptedBy) == 0 {
		return hb, false, nil
	}
	previous := row.AttemptedBy[len(row.AttemptedBy)-1]
	err = s.store.RunInTx(ctx, func(ctx context.Context, tx catalog.Tx) error {
		now := time.Now().UTC()
		state, finalizedAt := rivertype.JobStateAvailable, (*time.Time)(nil)
		var meta struct {
			CancelAttemptedAt time.Time `json:"cancel_attempted_at"`
		}
		_ = json.Unmarshal(row.Metadata, &meta)
		switch {
		case !meta.CancelAttemptedAt.IsZero():
			state, finalizedAt = rivertype.JobStateCancelled, &now
		case row.Attempt >= row.MaxAttempts:
			state, finalizedAt = rivertype.JobStateDiscarded, &now
		}
		attemptErr, err := json.Marshal(rivertype.AttemptError{
			At:      now,
			Attempt: max(row.Attempt, 0),
			Error: fmt.Sprintf("%s: the process %s died while running attempt %d, and the process %s started on its data directory handed the job back (without waiting for rescue_after)",
				HandBackErrorPrefix, previous, row.Attempt, s.ClientID()),
		})
		if err != nil {
			return err
		}
		// River's rescuer's own update (errors appended, river:rescue_count
		// incremented, state set), guarded so that it applies only while the
		// job is still running the attempt we read: a job rescued and
		// started again elsewhere meanwhile has a later attempted_at.
		exec := riverpgxv5.New(nil).UnwrapExecutor(tx)
		if _, err := exec.JobRescueMany(ctx, &riverdriver.JobRescueManyParams{
			ID:           []int64{row.ID},
			Error:        [][]byte{attemptErr},
			FinalizedAt:  []*time.Time{finalizedAt},
			ScheduledAt:  []time.Time{now},
			State:        []string{string(state)},
			StuckHorizon: row.AttemptedAt.Add(time.Microsecond),
		}); err != nil {
			return err
		}
		updated, err := s.client.JobGetTx(ctx, tx, row.ID)
		if err != nil {
			return err
		}
		if updated.State != state || len(updated.Errors) != len(row.Errors)+1 ||
			!strings.HasPrefix(updated.Errors[len(updated.Errors)-1].Error, HandBackErrorPrefix) {
			return errNotHandedBack
		}
		a := args(row)
		hb = HandedBack{ID: row.ID, Kind: row.Kind, Dataset: a.Dataset, Previous: previous, State: string(state)}
		return s.store.AppendAuditTx(ctx, tx, catalog.AuditEntry{
			Actor:   "node:" + s.opts.NodeID,
			Action:  ActionHandBack,
			Dataset: a.Dataset,
			Reason:  "the process running the job died; this process took over its data directory",
			Details: map[string]any{"job_id": row.ID, "kind": row.Kind, "attempt": row.Attempt,
				"previous": previous, "client": s.ClientID(), "state": string(state)},
		})
	})
	if errors.Is(err, errNotHandedBack) {
		return hb, false, nil
	}
	return hb, err == nil, err
}

// errNotHandedBack rolls back a hand-back whose job changed meanwhile.
var errNotHandedBack = errors.New("job changed meanwhile")

// HandBackInfo says when a job of a kind was last handed back after a
// restart (KindStatus.LastHandedBack).
type HandBackInfo struct {
	JobID int64     `json:"job_id"`
	At    time.Time `json:"at"`
	// Error is the attempt error recorded: which process died and which
	// took over.
	Error string `json:"error"`
}

// lastHandBack returns the latest hand-back of a job of kind for the dataset
// id, or nil: the newest job carrying a hand-back attempt error.
func (s *Service) lastHandBack(ctx context.Context, kind string, datasetID int64) (*HandBackInfo, error) {
	res, err := s.client.JobList(ctx, river.NewJobListParams().
		Kinds(kind).
		OrderBy(river.JobListOrderByID, river.SortOrderDesc).
		Where("args @> @ts_args_filter::jsonb AND EXISTS (SELECT 1 FROM unnest(errors) AS e WHERE starts_with(e->>'error', @ts_hand_back))",
			river.NamedArgs{
				"ts_args_filter": `{"dataset_id":` + strconv.FormatInt(datasetID, 10) + `}`,
				"ts_hand_back":   HandBackErrorPrefix,
			}).
		First(1))
	if err != nil {
		return nil, fmt.Errorf("last hand-back of %s jobs of dataset %d: %w", kind, datasetID, err)
	}
	if len(res.Jobs) == 0 {
		return nil, nil
	}
	row := res.Jobs[0]
	for i := len(row.Errors) - 1; i >= 0; i-- {
		if e := row.Errors[i]; strings.HasPrefix(e.Error, HandBackErrorPrefix) {
			return &HandBackInfo{JobID: row.ID, At: e.At.UTC(), Error: e.Error}, nil
		}
	}
	return nil, nil
}

// ValidateNodeID checks that id can be a node id (Options.NodeID): 1 to 63
// lower-case letters, digits and '-', starting with a letter or digit.
func ValidateNodeID(id string) error {
	ok := id != "" && len(id) <= 63 && id[0] != '-'
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("node id %q: want 1 to 63 lower-case letters, digits and '-', starting with a letter or digit", id)
	}
	return nil
}
