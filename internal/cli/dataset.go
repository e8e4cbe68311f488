package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"timestore/internal/client"
)

func newDatasetCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dataset", Short: "Create, list, show, change and delete datasets"}
	cmd.AddCommand(newDatasetCreateCmd(g), newDatasetListCmd(g), newDatasetShowCmd(g), newDatasetSetPolicyCmd(g), newDatasetDeleteCmd(g))
	return cmd
}

// parseColumns parses "ts:timestamp,host:varchar,value:double".
func parseColumns(s string) ([]client.Column, error) {
	var cols []client.Column
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, typ, ok := strings.Cut(part, ":")
		if !ok || name == "" || typ == "" {
			return nil, fmt.Errorf("--columns: %q is not name:type", part)
		}
		cols = append(cols, client.Column{Name: strings.TrimSpace(name), Type: strings.ToLower(strings.TrimSpace(typ))})
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("--columns: at least one name:type is required")
	}
	return cols, nil
}

func readPolicyFile(path string) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("policy file: %w", err)}
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(b, se.Offset)
			return nil, usagef("policy file %s: not valid JSON at line %d, column %d: %v (the format: docs/policy.md)", path, line, col, se)
		}
		return nil, usagef("policy file %s: not valid JSON: %v (the format: docs/policy.md)", path, err)
	}
	return b, nil
}

// position converts a byte offset of b into a 1-based line and column.
func position(b []byte, offset int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < offset-1 && i < int64(len(b)); i++ {
		if b[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

func newDatasetCreateCmd(g *globals) *cobra.Command {
	var columns, timeCol, partition, target, policyFile string
	cmd := &cobra.Command{
		Use:   "create NAME --columns ts:timestamp,host:varchar,value:double --time-column ts",
		Short: "Create a dataset",
		Long:  "Create a dataset.\n\n" + policyHelp,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cols, err := parseColumns(columns)
			if err != nil {
				return usageError{err}
			}
			req := client.CreateDataset{Name: args[0], Columns: cols, TimeColumn: timeCol, Partition: partition, Target: target}
			if policyFile != "" {
				if req.Policy, err = readPolicyFile(policyFile); err != nil {
					return err
				}
			}
			d, err := g.client().CreateDataset(cmd.Context(), req)
			if err != nil {
				return err
			}
			return g.printDataset(d)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&columns, "columns", "", "schema as name:type pairs, comma separated (types: timestamp, timestamptz, bigint, integer, double, varchar, boolean)")
	fs.StringVar(&timeCol, "time-column", "", "the column that orders and partitions rows")
	fs.StringVar(&partition, "partition", "day", "partition window: hour, day or month")
	fs.StringVar(&target, "target", "local", "storage target for the dataset's partitions")
	fs.StringVar(&policyFile, "policy-file", "", "lifecycle policy JSON file (see docs/policy.md)")
	cmd.MarkFlagRequired("columns")
	cmd.MarkFlagRequired("time-column")
	return cmd
}

func (g *globals) printDataset(d client.Dataset) error {
	cols := make([]string, len(d.Columns))
	for i, c := range d.Columns {
		cols[i] = c.Name + ":" + c.Type
	}
	policy := string(d.Policy)
	if policy == "" {
		policy = "{}"
	}
	return g.printObject(d, [][2]string{
		{"name", d.Name},
		{"columns", strings.Join(cols, ",")},
		{"time column", d.TimeColumn},
		{"partition", d.Partition},
		{"target", d.Target},
		{"manifest version", strconv.FormatInt(d.ManifestVersion, 10)},
		{"partitions", strconv.FormatInt(d.Totals.Partitions, 10)},
		{"rows", strconv.FormatInt(d.Totals.Rows, 10)},
		{"bytes", humanBytes(d.Totals.Bytes)},
		{"policy", policy},
	})
}

func newDatasetListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List datasets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := g.client().ListDatasets(cmd.Context())
			if err != nil {
				return err
			}
			if ds == nil {
				ds = []client.Dataset{}
			}
			t := table{header: []string{"name", "time_column", "partition", "target", "manifest_version", "partitions", "rows", "bytes"}, raw: map[string]any{"datasets": ds}}
			for _, d := range ds {
				size := humanBytes(d.Totals.Bytes)
				if g.output == "csv" {
					size = strconv.FormatInt(d.Totals.Bytes, 10)
				}
				t.rows = append(t.rows, []string{d.Name, d.TimeColumn, d.Partition, d.Target, strconv.FormatInt(d.ManifestVersion, 10),
					strconv.FormatInt(d.Totals.Partitions, 10), strconv.FormatInt(d.Totals.Rows, 10), size})
			}
			return g.print(t)
		},
	}
}

func newDatasetShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a dataset with the totals of its live manifest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := g.client().GetDataset(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printDataset(d)
		},
	}
}

func newDatasetSetPolicyCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "set-policy NAME --file policy.json",
		Aliases: []string{"update"},
		Short:   "Replace a dataset's lifecycle policy (alias: update)",
		Long:    "Replace a dataset's lifecycle policy with the one in --file (the whole policy: a section left out is turned off).\n\n" + policyHelp,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readPolicyFile(file)
			if err != nil {
				return err
			}
			d, err := g.client().SetPolicy(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			return g.printDataset(d)
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "policy JSON file (see docs/policy.md)")
	cmd.MarkFlagRequired("file")
	return cmd
}

func newDatasetDeleteCmd(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--yes]",
		Short: "Delete a dataset (its partitions are removed and later swept)",
		Long: "Delete a dataset: its partitions are removed and later swept, and its data cannot be queried again.\n" +
			"Asks for confirmation on a terminal; elsewhere (scripts, pipes) --yes is required.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.confirm(yes, fmt.Sprintf("delete dataset %q and all its data", args[0])); err != nil {
				return err
			}
			if err := g.client().DeleteDataset(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "dataset %s deleted\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking for confirmation")
	return cmd
}

// policyHelp summarises the policy format for the commands that take one.
const policyHelp = `The policy file is JSON with three optional sections; a section left out turns that part off.
Every field is described in docs/policy.md. Example:

  {"compaction": {"target_file_bytes": "128MiB"},
   "retention":  {"max_age": "30d", "max_bytes": "10GB", "grace": "1h"},
   "export":     {"target": "archive", "after": "1d", "window": "day"}}

Durations: a number and a unit, no space: "30d", "1w", "1d12h", "90m" (units w, d, h, m, s).
Sizes: bytes (1073741824) or "10GB" (powers of 1000), "512MiB" (powers of 1024).
Schedules: cron ("*/15 * * * *") or "@every 15m", "@hourly", "@daily".`
