package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"timestore/internal/client"
	"timestore/internal/jobs"
)

// adminClient uses TIMESTORE_ADMIN_TOKEN when set, else --token.
func (g *globals) adminClient() *client.Client {
	tok := g.token
	if t := os.Getenv("TIMESTORE_ADMIN_TOKEN"); t != "" && !g.tokenFlagSet {
		tok = t
	}
	return client.New(g.server, tok)
}

var maintenanceKinds = []string{"compaction", "retention", "export", "sweep", "reconcile"}

func newMaintenanceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "maintenance", Short: "Trigger lifecycle jobs and inspect a dataset's lifecycle"}
	var dataset string
	var dryRun, wait bool
	var timeout time.Duration
	run := &cobra.Command{
		Use:   "run " + strings.Join(maintenanceKinds, "|") + " --dataset NAME [--dry-run] [--wait]",
		Short: "Run a lifecycle job now (or show its plan with --dry-run)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := args[0]
			if !contains(maintenanceKinds, kind) {
				return usagef("unknown job kind %q: want one of %s", kind, strings.Join(maintenanceKinds, ", "))
			}
			c := g.adminClient()
			if dryRun {
				plan, err := c.DryRun(cmd.Context(), kind, dataset)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(g, plan)
				}
				fmt.Fprintf(g.stdout, "dry run of %s on %s: nothing was changed\n\n", kind, dataset)
				return renderHuman(g.stdout, plan)
			}
			t, err := c.RunMaintenance(cmd.Context(), kind, dataset)
			if err != nil {
				return err
			}
			note := ""
			if t.Duplicate {
				note = " (a " + kind + " job for this dataset was already pending; following it)"
			}
			first := fmt.Sprintf("job %d: %s of %s: %s%s", t.JobID, kind, dataset, t.State, note)
			fmt.Fprintln(g.stderr, first)
			if !wait {
				if g.output == "json" {
					return printJSON(g, t)
				}
				fmt.Fprintln(g.stdout, t.JobID)
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			job, err := waitJob(ctx, g, c, t.JobID, t.State)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if err := printJSON(g, job); err != nil {
					return err
				}
			} else if len(job.Output) > 0 {
				if err := renderHuman(g.stdout, job.Output); err != nil {
					return err
				}
			}
			if job.Waiting != "" {
				// It did its work and runs again by itself (a sweep
				// waiting for a grace period): not a failure.
				return nil
			}
			if job.State != "completed" {
				msg := fmt.Sprintf("job %d ended %s", job.ID, job.State)
				if n := len(job.Errors); n > 0 {
					msg += ": " + job.Errors[n-1].Error
				}
				return errors.New(msg)
			}
			return nil
		},
	}
	run.Flags().StringVar(&dataset, "dataset", "", "the dataset")
	run.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan; change nothing")
	run.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends or waits to run again (one line per change on stderr); exit 1 unless it completes or waits")
	run.Flags().DurationVar(&timeout, "timeout", time.Hour, "with --wait: give up after this long")
	run.MarkFlagRequired("dataset")

	status := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a dataset's lifecycle: last run, status, error, next run, backlog and last hand-back after a restart per job kind",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := g.adminClient().Lifecycle(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printLifecycle(g, raw)
		},
	}
	cmd.AddCommand(run, status)
	return cmd
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func printJSON(g *globals, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "%s\n", b)
	return err
}

// waitJob polls a job until it finishes or snoozes (it did its work and
// waits to run again, job.Waiting), printing one line on stderr each time
// its state, attempt or last error changes; initial is the state already
// reported.
func waitJob(ctx context.Context, g *globals, c *client.Client, id int64, initial string) (client.Job, error) {
	last := jobLine(client.Job{ID: id, State: initial})
	delay := 200 * time.Millisecond
	for {
		job, err := c.Job(ctx, id)
		if err != nil {
			return job, err
		}
		if line := jobLine(job); line != last {
			fmt.Fprintln(g.stderr, line)
			last = line
		}
		if job.Finished() || job.Waiting != "" {
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, fmt.Errorf("stopped waiting for job %d (still %s): %w", id, job.State, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 2*time.Second {
			delay *= 2
		}
	}
}

// jobLine is the progress line of a job in its current state.
func jobLine(job client.Job) string {
	line := fmt.Sprintf("job %d: %s", job.ID, job.State)
	if job.Attempt > 0 {
		line += fmt.Sprintf(" (attempt %d of %d)", job.Attempt, job.MaxAttempts)
	}
	switch {
	case job.Waiting != "":
		line += ": " + job.Waiting
	case len(job.Errors) > 0 && job.State != "completed":
		line += ": last error: " + job.Errors[len(job.Errors)-1].Error
	}
	return line
}

func printLifecycle(g *globals, raw json.RawMessage) error {
	if g.output == "json" {
		return printJSON(g, raw)
	}
	var st struct {
		Dataset string `json:"dataset"`
		Kinds   []struct {
			Kind       string     `json:"kind"`
			Enabled    bool       `json:"enabled"`
			Schedule   string     `json:"schedule"`
			LastRun    *time.Time `json:"last_run"`
			LastStatus string     `json:"last_status"`
			LastError  string     `json:"last_error"`
			NextRun    *time.Time `json:"next_run"`
			Backlog    int        `json:"backlog"`
			// LastHandedBack: the latest job of the kind that a restarted
			// process handed back after its predecessor died running it.
			LastHandedBack *struct {
				JobID int64     `json:"job_id"`
				At    time.Time `json:"at"`
			} `json:"last_handed_back"`
		} `json:"kinds"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Kinds) == 0 {
		return printJSON(g, raw)
	}
	t := table{header: []string{"kind", "enabled", "schedule", "last_run", "last_status", "next_run", "backlog", "last_handed_back", "last_error"}, raw: raw}
	ts := func(p *time.Time) string {
		if p == nil {
			return "-"
		}
		return p.UTC().Format(time.RFC3339)
	}
	for _, k := range st.Kinds {
		handedBack := "-"
		if hb := k.LastHandedBack; hb != nil {
			handedBack = fmt.Sprintf("%s (job %d)", hb.At.UTC().Format(time.RFC3339), hb.JobID)
		}
		t.rows = append(t.rows, []string{k.Kind, strconv.FormatBool(k.Enabled), k.Schedule, ts(k.LastRun), k.LastStatus, ts(k.NextRun),
			strconv.Itoa(k.Backlog), handedBack, k.LastError})
	}
	return g.print(t)
}

func newJobsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "List, show, retry and cancel lifecycle jobs"}
	var f client.JobFilter
	list := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			jobs, err := g.adminClient().Jobs(cmd.Context(), f)
			if err != nil {
				return err
			}
			t := table{header: []string{"id", "kind", "dataset", "state", "attempt", "created_at", "scheduled_at", "finished_at", "last_error", "waiting"}, raw: map[string]any{"jobs": jobs}}
			for _, j := range jobs {
				fin, lastErr := "-", ""
				if j.FinishedAt != nil {
					fin = j.FinishedAt.UTC().Format(time.RFC3339)
				}
				if n := len(j.Errors); n > 0 {
					lastErr = j.Errors[n-1].Error
				}
				t.rows = append(t.rows, []string{strconv.FormatInt(j.ID, 10), j.Kind, j.Dataset, j.State,
					fmt.Sprintf("%d/%d", j.Attempt, j.MaxAttempts), j.CreatedAt.UTC().Format(time.RFC3339),
					j.ScheduledAt.UTC().Format(time.RFC3339), fin, lastErr, j.Waiting})
			}
			return g.print(t)
		},
	}
	list.Flags().StringVar(&f.State, "state", "", "available, scheduled, running, retryable, completed, cancelled or discarded")
	list.Flags().StringVar(&f.Kind, "kind", "", "job kind")
	list.Flags().StringVar(&f.Dataset, "dataset", "", "dataset")
	list.Flags().IntVar(&f.Limit, "limit", 50, "at most this many")

	one := func(use, short string, op func(context.Context, *client.Client, int64) (client.Job, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil {
					return usagef("job id %q is not a number", args[0])
				}
				j, err := op(cmd.Context(), g.adminClient(), id)
				if err != nil {
					return err
				}
				return printJob(g, j)
			},
		}
	}
	cmd.AddCommand(list,
		one("show", "Show a job with its errors and output", func(ctx context.Context, c *client.Client, id int64) (client.Job, error) { return c.Job(ctx, id) }),
		one("retry", "Run a failed, discarded or cancelled job again", func(ctx context.Context, c *client.Client, id int64) (client.Job, error) { return c.RetryJob(ctx, id) }),
		one("cancel", "Cancel a pending, scheduled or running job", func(ctx context.Context, c *client.Client, id int64) (client.Job, error) { return c.CancelJob(ctx, id) }),
	)
	return cmd
}

func printJob(g *globals, j client.Job) error {
	if g.output == "json" {
		return printJSON(g, j)
	}
	fin := "-"
	if j.FinishedAt != nil {
		fin = j.FinishedAt.UTC().Format(time.RFC3339)
	}
	kv := [][2]string{
		{"id", strconv.FormatInt(j.ID, 10)}, {"kind", j.Kind}, {"dataset", j.Dataset}, {"state", j.State},
		{"trigger", j.Trigger}, {"attempt", fmt.Sprintf("%d of %d", j.Attempt, j.MaxAttempts)},
		{"created", j.CreatedAt.UTC().Format(time.RFC3339)}, {"scheduled", j.ScheduledAt.UTC().Format(time.RFC3339)}, {"finished", fin},
	}
	if j.Waiting != "" {
		kv = append(kv, [2]string{"note", j.Waiting})
	}
	for _, e := range j.Errors {
		if strings.HasPrefix(e.Error, jobs.HandBackErrorPrefix) {
			kv = append(kv, [2]string{"handed back", fmt.Sprintf("%s, after a restart: the process running attempt %d died and its successor on the data directory put the job back in the queue",
				e.At.UTC().Format(time.RFC3339), e.Attempt)})
		}
	}
	for _, e := range j.Errors {
		kv = append(kv, [2]string{fmt.Sprintf("error (attempt %d)", e.Attempt), e.At.UTC().Format(time.RFC3339) + " " + e.Error})
	}
	if len(j.Output) > 0 {
		kv = append(kv, [2]string{"output", string(j.Output)})
	}
	return g.printObject(j, kv)
}

func newAuditCmd(g *globals) *cobra.Command {
	var dataset, action string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, err := g.adminClient().Audit(cmd.Context(), dataset, action, limit)
			if err != nil {
				return err
			}
			t := table{header: []string{"id", "time", "actor", "action", "dataset", "partitions", "bytes", "reason"}, raw: map[string]any{"entries": entries}}
			for _, e := range entries {
				parts := make([]string, len(e.Partitions))
				for i, p := range e.Partitions {
					parts[i] = strconv.FormatInt(p, 10)
				}
				ps := strings.Join(parts, " ")
				if len(ps) > 40 {
					ps = ps[:37] + "..."
				}
				t.rows = append(t.rows, []string{strconv.FormatInt(e.ID, 10), e.Time.UTC().Format(time.RFC3339), e.Actor, e.Action, e.Dataset, ps, strconv.FormatInt(e.Bytes, 10), e.Reason})
			}
			return g.print(t)
		},
	}
	cmd.Flags().StringVar(&dataset, "dataset", "", "only this dataset")
	cmd.Flags().StringVar(&action, "action", "", "only this action, e.g. partition.ingest")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many")
	return cmd
}
