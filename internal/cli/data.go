package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"timestore/internal/client"
)

func newIngestCmd(g *globals) *cobra.Command {
	var format, key string
	cmd := &cobra.Command{
		Use:   "ingest NAME FILE",
		Short: "Ingest rows from a CSV, NDJSON or JSON file ('-' reads standard input)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, path := args[0], args[1]
			if format == "" {
				format = formatFromExt(path)
				if format == "" {
					return usagef("cannot tell the format of %q from its extension: pass --format csv|ndjson|json", path)
				}
			}
			if _, ok := client.ContentTypes[format]; !ok {
				return usagef("--format %q: want csv, ndjson or json", format)
			}
			var body io.Reader = os.Stdin
			var size int64 = -1
			if path != "-" {
				f, err := os.Open(path)
				if err != nil {
					return usageError{err}
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil {
					size = st.Size()
				}
				body = f
			}
			pr := newProgress(g.stderr, body, size)
			defer pr.stop()
			start := time.Now()
			res, err := g.client().Ingest(cmd.Context(), name, format, pr, key)
			pr.stop()
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printObject(res, nil)
			}
			note := ""
			if res.Replayed {
				note = " (replayed: this idempotency key was used before; nothing new was written)"
			}
			fmt.Fprintf(g.stdout, "ingested %s into %s of %s, manifest version %d, in %s%s\n",
				count(res.RowsWritten, "row"), count(res.PartitionsWritten, "partition"), name, res.ManifestVersion, time.Since(start).Round(time.Millisecond), note)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "csv, ndjson or json (default: from the file extension)")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "makes a retry of the same request a no-op")
	return cmd
}

func formatFromExt(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return "csv"
	case ".ndjson", ".jsonl":
		return "ndjson"
	case ".json":
		return "json"
	}
	return ""
}

// progress reports upload progress on a terminal once a second.
type progress struct {
	r       io.Reader
	w       io.Writer
	size    int64
	n       atomic.Int64
	done    chan struct{}
	stopped atomic.Bool
}

func newProgress(w io.Writer, r io.Reader, size int64) *progress {
	p := &progress{r: r, w: w, size: size, done: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			go p.loop()
		}
	}
	return p
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

func (p *progress) loop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			fmt.Fprint(p.w, "\r\033[K")
			return
		case <-t.C:
			n := p.n.Load()
			if p.size > 0 {
				fmt.Fprintf(p.w, "\rsent %s of %s (%d%%)", humanBytes(n), humanBytes(p.size), n*100/p.size)
			} else {
				fmt.Fprintf(p.w, "\rsent %s", humanBytes(n))
			}
			if p.size > 0 && n >= p.size {
				fmt.Fprint(p.w, ", server is writing partitions…")
			}
		}
	}
}

func (p *progress) stop() {
	if p.stopped.CompareAndSwap(false, true) {
		close(p.done)
	}
}

func newQueryCmd(g *globals) *cobra.Command {
	var sql, from, to string
	cmd := &cobra.Command{
		Use:   `query NAME --sql "SELECT … FROM NAME …"`,
		Short: "Run SQL over a dataset's live manifest, pruned to [from, to)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := client.QueryRequest{SQL: sql, From: from, To: to}
			if g.output == "csv" {
				body, err := g.client().QueryCSV(cmd.Context(), args[0], q)
				if err != nil {
					return err
				}
				defer body.Close()
				_, err = io.Copy(g.stdout, body)
				return err
			}
			res, err := g.client().Query(cmd.Context(), args[0], q)
			if err != nil {
				return err
			}
			t := table{header: res.Columns, raw: res}
			for _, row := range res.Rows {
				rec := make([]string, len(row))
				for i, v := range row {
					if v == nil {
						rec[i] = "NULL"
					} else {
						rec[i] = fmt.Sprint(v)
					}
				}
				t.rows = append(t.rows, rec)
			}
			if err := g.print(t); err != nil {
				return err
			}
			if g.output == "table" {
				fmt.Fprintf(g.stderr, "(%s)\n", count(res.RowCount, "row"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&sql, "sql", "", "the query; the dataset's name is its table")
	cmd.Flags().StringVar(&from, "from", "", "inclusive lower time bound (RFC 3339 or a date)")
	cmd.Flags().StringVar(&to, "to", "", "exclusive upper time bound (RFC 3339 or a date)")
	cmd.MarkFlagRequired("sql")
	return cmd
}

func newPartitionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "partitions", Short: "Inspect a dataset's partitions"}
	var state string
	list := &cobra.Command{
		Use:   "list NAME",
		Short: "List partitions (live by default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			parts, err := g.client().Partitions(cmd.Context(), args[0], state)
			if err != nil {
				return err
			}
			t := table{header: []string{"id", "time_min", "time_max", "rows", "bytes", "level", "state", "target", "key"}, raw: map[string]any{"partitions": parts}}
			for _, p := range parts {
				t.rows = append(t.rows, []string{strconv.FormatInt(p.ID, 10), p.TimeMin.UTC().Format(time.RFC3339), p.TimeMax.UTC().Format(time.RFC3339),
					strconv.FormatInt(p.RowCount, 10), strconv.FormatInt(p.SizeBytes, 10), strconv.Itoa(p.Level), p.State, p.Target, p.Key})
			}
			return g.print(t)
		},
	}
	list.Flags().StringVar(&state, "state", "live", "live, removed, purged or all")
	var off bool
	noCompact := &cobra.Command{
		Use:   "no-compact NAME ID... [--off]",
		Short: "Exclude partitions from compaction (or, with --off, include them again)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args[1:])
			if err != nil {
				return err
			}
			if err := g.adminClient().SetNoCompact(cmd.Context(), args[0], ids, !off); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d partitions of %s: no-compact %v\n", len(ids), args[0], !off)
			return nil
		},
	}
	noCompact.Flags().BoolVar(&off, "off", false, "clear the mark")
	cmd.AddCommand(list, newPartitionsRestoreCmd(g), noCompact)
	return cmd
}

func parseIDs(args []string) ([]int64, error) {
	ids := make([]int64, len(args))
	for i, a := range args {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id <= 0 {
			return nil, usagef("partition id %q is not a positive number", a)
		}
		ids[i] = id
	}
	return ids, nil
}
