package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"timestore/internal/client"
)

// newHoldsCmd is `timestore holds add|list|release`.
func newHoldsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "holds",
		Short: "Keep time ranges of a dataset from being removed by retention",
		Long: `A hold keeps retention from removing any partition of a dataset that overlaps
its time range [from, to), until it is released. Holds do not bring back data
that retention removed before: restore it with 'timestore partitions restore'
while it is not yet purged (the add command lists such partitions).`,
	}
	var from, to, reason string
	add := &cobra.Command{
		Use:   "add NAME --from T --to T --reason R",
		Short: "Hold [from, to) of a dataset",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the data must be kept")
			}
			h, err := g.adminClient().AddHold(cmd.Context(), args[0], from, to, reason)
			if err != nil {
				return err
			}
			if g.output != "json" && len(h.RemovedPartitions) > 0 {
				fmt.Fprintf(g.stderr, "note: partitions %s in this range were removed before the hold; restore them with: timestore partitions restore %s %s\n",
					joinPartitionIDs(h.RemovedPartitions, ", "), args[0], joinPartitionIDs(h.RemovedPartitions, " "))
			}
			return g.printObject(h, holdFields(h))
		},
	}
	add.Flags().StringVar(&from, "from", "", "start of the range, inclusive (RFC 3339 or a date)")
	add.Flags().StringVar(&to, "to", "", "end of the range, exclusive (RFC 3339 or a date)")
	add.Flags().StringVar(&reason, "reason", "", "why the data must be kept (recorded in the audit log)")
	for _, f := range []string{"from", "to", "reason"} {
		_ = add.MarkFlagRequired(f)
	}

	var all bool
	list := &cobra.Command{
		Use:   "list [NAME]",
		Short: "List active holds (of one dataset, or of all)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataset := ""
			if len(args) == 1 {
				dataset = args[0]
			}
			holds, err := g.adminClient().Holds(cmd.Context(), dataset, all)
			if err != nil {
				return err
			}
			if holds == nil {
				holds = []client.Hold{}
			}
			t := table{header: []string{"id", "dataset", "from", "to", "reason", "created_by", "created_at", "released_at"},
				raw: map[string]any{"holds": holds}}
			for _, h := range holds {
				rel := ""
				if h.ReleasedAt != nil {
					rel = h.ReleasedAt.UTC().Format(time.RFC3339) + " by " + h.ReleasedBy
				}
				t.rows = append(t.rows, []string{strconv.FormatInt(h.ID, 10), h.Dataset, holdTime(h.From), holdTime(h.To),
					h.Reason, h.CreatedBy, holdTime(h.CreatedAt), rel})
			}
			return g.print(t)
		},
	}
	list.Flags().BoolVar(&all, "all", false, "include released holds")

	var yes bool
	release := &cobra.Command{
		Use:   "release ID [--yes]",
		Short: "Release a hold: retention may remove its range again",
		Long: "Release a hold: retention may remove its range again, and the sweeper then delete it.\n" +
			"Asks for confirmation on a terminal; elsewhere (scripts, pipes) --yes is required.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return usagef("hold id %q is not a positive number", args[0])
			}
			if err := g.confirm(yes, fmt.Sprintf("release hold %d (retention may then remove the data it protects)", id)); err != nil {
				return err
			}
			h, err := g.adminClient().ReleaseHold(cmd.Context(), id)
			if err != nil {
				return err
			}
			return g.printObject(h, holdFields(h))
		},
	}
	release.Flags().BoolVarP(&yes, "yes", "y", false, "release without asking for confirmation")
	cmd.AddCommand(add, list, release)
	return cmd
}

// newPartitionsRestoreCmd is `timestore partitions restore NAME ID...`, a
// subcommand of `timestore partitions`.
func newPartitionsRestoreCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restore NAME ID...",
		Short: "Make partitions that retention removed live again (until the sweeper purges them)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids := make([]int64, 0, len(args)-1)
			for _, a := range args[1:] {
				id, err := strconv.ParseInt(a, 10, 64)
				if err != nil || id <= 0 {
					return usagef("partition id %q is not a positive number", a)
				}
				ids = append(ids, id)
			}
			res, err := g.adminClient().RestorePartitions(cmd.Context(), args[0], ids)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printObject(res, nil)
			}
			fmt.Fprintf(g.stdout, "restored %d partitions (%d rows, %s) of %s, manifest version %d\n",
				len(res.Restored), res.Totals.Rows, humanBytes(res.Totals.Bytes), res.Dataset, res.ManifestVersion)
			for _, n := range res.Notes {
				fmt.Fprintf(g.stderr, "note: %s (partitions %s)\n", n, joinPartitionIDs(res.RemovedAgainByPolicy, ", "))
			}
			return nil
		},
	}
}

func holdFields(h client.Hold) [][2]string {
	kv := [][2]string{
		{"id", strconv.FormatInt(h.ID, 10)}, {"dataset", h.Dataset}, {"from", holdTime(h.From)}, {"to", holdTime(h.To)},
		{"reason", h.Reason}, {"created_by", h.CreatedBy}, {"created_at", holdTime(h.CreatedAt)},
	}
	if h.ReleasedAt != nil {
		kv = append(kv, [2]string{"released_at", holdTime(*h.ReleasedAt)}, [2]string{"released_by", h.ReleasedBy})
	}
	return kv
}

func holdTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func joinPartitionIDs(ids []int64, sep string) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, sep)
}
