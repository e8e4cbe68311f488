package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzPrepareIngest: hostile bodies never panic, never fail with anything but
// an *InputError, and leave no file behind when refused.
func FuzzPrepareIngest(f *testing.F) {
	seeds := []struct {
		format byte
		body   string
	}{
		{0, "ts,series,value\n2024-01-01T00:00:00Z,a,1\n2024-01-02 00:00:00,b,2.5\n"},
		{0, "ts,series,value\n2024-01-01T00:00:00Z,a,abc\n"},
		{0, "ts,value,value\n2024-01-01,1,2\n"},
		{0, "series\nx\n"},
		{0, "ts,series,value\n\"2024-01-01T00:00:00Z,a,1\n"},
		{1, `{"ts":"2024-01-01T00:00:00+02:00","series":"a","value":1}` + "\n" + `{"ts":null}` + "\n"},
		{1, `{"ts":"2024-01-01T00:00:00Z","colour":1}` + "\n"},
		{1, "{oops\n"},
		{2, `[{"ts":"2024-01-01T00:00:00Z","series":"a","value":1e308}]`},
		{2, `[{"ts":"2024-01-01T00:00:00Z","value":[1,2]}]`},
		{2, `[`},
	}
	for _, s := range seeds {
		f.Add(s.format, []byte(s.body))
	}
	formats := []Format{FormatCSV, FormatNDJSON, FormatJSON}
	ds := metrics("fuzz", "day")
	f.Fuzz(func(t *testing.T, format byte, body []byte) {
		if len(body) > 4096 {
			return
		}
		dir := t.TempDir()
		in := filepath.Join(dir, "body")
		if err := os.WriteFile(in, body, 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		files, err := testEngine.PrepareIngest(ctx, ds, formats[int(format)%len(formats)], in, out)
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("bad input got an internal error (a 500 for the client): %v", err)
			}
			left, _ := os.ReadDir(out)
			if len(left) != 0 {
				t.Fatalf("refused input left %d files", len(left))
			}
			return
		}
		var rows int64
		for _, w := range files {
			if w.RowCount <= 0 || w.TimeMax.Before(w.TimeMin) {
				t.Fatalf("bad window file %+v", w.PartitionFile)
			}
			rows += w.RowCount
		}
		if rows == 0 {
			t.Fatal("accepted input with no rows")
		}
	})
}

// FuzzQuerySandbox: whatever the SQL, a query of one dataset never returns
// the contents of a file outside its snapshot.
func FuzzQuerySandbox(f *testing.F) {
	dir := f.TempDir()
	secret := filepath.Join(dir, "secret.csv")
	if err := os.WriteFile(secret, []byte("token\nTOPSECRET-4242\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	ds := metrics("fz", "day")
	in := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(in, []byte("ts,series,value\n2024-01-01T00:00:00Z,a,1\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		f.Fatal(err)
	}
	files, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, out)
	if err != nil {
		f.Fatal(err)
	}
	paths := []string{files[0].Path}
	for _, s := range []string{
		"SELECT * FROM fz", "SELECT * FROM read_csv('" + secret + "')", "SELECT * FROM read_text('" + secret + "')",
		"ATTACH '" + secret + "' AS x", "COPY fz TO '" + dir + "/x.csv'", "INSTALL httpfs", "SET enable_external_access=true",
		"SELECT * FROM glob('" + dir + "/*')", "PRAGMA version", "CALL duckdb_secrets()", "SELECT 1; SELECT 2",
		"WITH x AS (SELECT * FROM read_blob('" + secret + "')) SELECT * FROM x", "EXPLAIN ANALYZE SELECT * FROM read_csv_auto('" + secret + "')",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 2048 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rows, err := testEngine.Query(ctx, QueryRequest{Dataset: ds, Files: paths, SQL: sql, Timeout: 10 * time.Second})
		if err != nil {
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("the error leaks the secret: %v", err)
			}
			return
		}
		defer rows.Close()
		for rows.Next() {
			for _, v := range rows.Values() {
				if strings.Contains(fmt.Sprint(v), "TOPSECRET") {
					t.Fatalf("%q read a file outside the snapshot", sql)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "x.csv")); err == nil {
			t.Fatalf("%q wrote a file", sql)
		}
	})
}
