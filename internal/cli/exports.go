package cli

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"timestore/internal/client"
)

// newExportsCmd is `timestore exports list NAME`.
func newExportsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exports",
		Short: "Inspect a dataset's Parquet exports",
		Long: `Exports are Parquet snapshots of a dataset's cold windows, written by the export
job to the policy's target under exports/NAME/window=LABEL/ (part-NNNN.parquet
files and a _manifest.json). Each window has versions: late data makes a new
version, which keeps the previous version's files and adds files; the one in
state "verified" is current, older ones are "superseded". See docs/exports.md.`,
	}
	var state string
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "List a dataset's export versions (all states by default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			xs, err := g.client().Exports(cmd.Context(), args[0], state)
			if err != nil {
				return err
			}
			if xs == nil {
				xs = []client.Export{}
			}
			t := table{header: []string{"id", "target", "window", "version", "state", "files", "rows", "bytes",
				"time_min", "time_max", "manifest_version", "verified_at", "error"},
				raw: map[string]any{"exports": xs}}
			for _, x := range xs {
				t.rows = append(t.rows, []string{strconv.FormatInt(x.ID, 10), x.Target, x.WindowLabel,
					strconv.Itoa(x.Version), x.State, strconv.Itoa(len(x.Keys)), strconv.FormatInt(x.RowCount, 10),
					strconv.FormatInt(x.SizeBytes, 10), optRFC3339(x.TimeMin), optRFC3339(x.TimeMax),
					strconv.FormatInt(x.ManifestVersion, 10), optRFC3339(x.VerifiedAt), x.Error})
			}
			return g.print(t)
		},
	}
	list.Flags().StringVar(&state, "state", "", "only versions in this state: writing, verified, failed or superseded")
	cmd.AddCommand(list)
	return cmd
}

func optRFC3339(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
