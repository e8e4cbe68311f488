package engine

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"timestore/internal/catalog"
)

// Format is the encoding of uploaded rows.
type Format string

// Input formats.
const (
	// FormatCSV is comma-separated values with a header row naming the columns.
	FormatCSV Format = "csv"
	// FormatNDJSON is one JSON object per line.
	FormatNDJSON Format = "ndjson"
	// FormatJSON is a JSON array of objects.
	FormatJSON Format = "json"
)

// WindowFile is a Parquet file written by PrepareIngest for one partition
// window, with its statistics. Target, Key and Checksum are left empty for the
// caller, which uploads the file.
type WindowFile struct {
	// Path is the local file in the output directory.
	Path string
	catalog.PartitionFile
}

// PrepareIngest reads the rows of inputPath (in format) with DuckDB's own
// readers, checks them against the schema of ds, splits them by the UTC
// partition window of the time column and writes one zstd Parquet file per
// window into outDir, rows sorted by time, columns in schema order with their
// declared types (absent columns are NULL). It returns the files ordered by
// window.
//
// Input the user must fix is reported as *InputError: an unknown, duplicate or
// missing column, a missing time value, a value of the wrong type, malformed
// CSV or JSON, no rows. Every other error is internal. On error no file is
// left in outDir. Concurrent calls are safe.
func (e *Engine) PrepareIngest(ctx context.Context, ds catalog.Dataset, format Format, inputPath, outDir string) ([]WindowFile, error) {
	ctx, span := e.startSpan(ctx, spanPrepareIngest, attrDataset.String(ds.Name), attrFormat.String(string(format)))
	files, reader, err := e.prepareIngest(ctx, ds, format, inputPath, outDir)
	span.SetAttributes(attrReader.String(reader))
	var rows, size int64
	for _, f := range files {
		rows += f.RowCount
		size += f.SizeBytes
	}
	if fi, serr := os.Stat(inputPath); serr == nil {
		span.SetAttributes(attrInputBytes.Int64(fi.Size()))
	}
	span.SetAttributes(attrRows.Int64(rows), attrWindows.Int(len(files)), attrBytes.Int64(size))
	endSpan(span, err)
	return files, err
}

// prepareIngest reads an input of at most Config.NativeInputMaxBytes in Go
// (prepareNative) and, when that path does not read it with certainty, with
// DuckDB (prepareDuckDB), which also decides and explains every refusal.
//
// prepareDuckDB reads the input once, in the common case: one COPY parses
// it, converts the values, splits the rows by window and writes the files
// (writePartitioned). For JSON it first tries the read with detected keys
// and types (ingestDetected), which also rejects unknown keys; when that
// read does not apply or fails, and always for CSV, it reads with the
// declared types (JSON after a scan of every key), and a failed read is
// explained by diagnose.
// It returns which reader ran: "native" or "duckdb".
func (e *Engine) prepareIngest(ctx context.Context, ds catalog.Dataset, format Format, inputPath, outDir string) ([]WindowFile, string, error) {
	if err := e.checkOpen(); err != nil {
		return nil, "", err
	}
	if err := checkDataset(ds); err != nil {
		return nil, "", fmt.Errorf("prepare ingest: %w", err)
	}
	if fi, err := os.Stat(inputPath); err == nil && fi.Size() > 0 && fi.Size() <= e.cfg.NativeInputMaxBytes {
		files, err := e.prepareNative(ds, format, inputPath, outDir)
		if !errors.Is(err, errNotNative) {
			return files, "native", err
		}
	}
	files, err := e.prepareDuckDB(ctx, ds, format, inputPath, outDir)
	return files, "duckdb", err
}

// prepareDuckDB is prepareIngest's path through DuckDB, for every input
// the native path (prepareNative) does not read.
func (e *Engine) prepareDuckDB(ctx context.Context, ds catalog.Dataset, format Format, inputPath, outDir string) ([]WindowFile, error) {
	if err := e.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkDataset(ds); err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	src := &source{ds: ds, format: format, path: inputPath}
	switch format {
	case FormatCSV, FormatNDJSON, FormatJSON:
	default:
		return nil, fmt.Errorf("prepare ingest: unknown format %q", format)
	}
	fi, err := os.Stat(inputPath)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	if fi.Size() == 0 {
		return nil, &InputError{Message: "empty input: no rows"}
	}
	src.size, src.threads = fi.Size(), e.threads

	conn, err := e.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	defer conn.Close()

	id := e.nextID()
	if format == FormatCSV {
		if err := src.readCSVHeader(); err != nil {
			return nil, err
		}
	} else {
		files, ok, err := e.ingestDetected(ctx, conn, src, id, outDir)
		if err != nil || ok {
			return files, err
		}
		if err := src.scanJSONKeys(ctx, conn); err != nil {
			return nil, err
		}
	}
	files, err := e.writePartitioned(ctx, conn, ds, "SELECT "+src.projection()+" FROM "+src.reader(false, ""), id, outDir)
	var rejected *rejectedRead
	if errors.As(err, &rejected) {
		return nil, src.explain(ctx, conn, rejected)
	}
	return files, err
}

// ingestDetected is the fast path for JSON: one read that both parses the
// values and rejects unknown keys. Without "columns", DuckDB's JSON reader
// detects the keys and types from a sample and then fails on any object with
// a key outside the sample, provided every detected column is read; with
// "columns" it would ignore unknown keys, and checking them needs a second
// parse of the whole file (json_keys), as long as the read itself.
//
// The types DuckDB detects come from a sample, and its JSON reader converts
// later values to them loosely (1.5 to the integer 2, true to the double 1,
// 1.5 to the boolean true). So the read is of a copy of the input with a
// hint object first (source.writeHinted) that gives every schema column a
// string: each column is then detected as text, or as JSON where the input
// has other values, and valueExpr converts it exactly as the exact path
// does.
//
// It applies when the sample shows only schema columns and every row has a
// time value. It reports false, and leaves no file, when it does not apply
// or the read fails for any reason; the caller then takes the exact path,
// which also explains errors.
func (e *Engine) ingestDetected(ctx context.Context, conn *sql.Conn, src *source, id uint64, outDir string) ([]WindowFile, bool, error) {
	hinted, marker, ok, err := src.writeHinted(outDir, id)
	if err != nil || !ok {
		return nil, false, err
	}
	defer os.Remove(hinted)
	files, err := e.writePartitioned(ctx, conn, src.ds, src.guardedSelect(hinted, marker), id, outDir)
	if errors.As(err, new(*rejectedRead)) {
		return nil, false, ctxErr(ctx)
	}
	if err != nil {
		return nil, false, err
	}
	detectedReads.Add(1)
	return files, true, nil
}

// ctxErr wraps the context's error, if any.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("prepare ingest: %w", err)
	}
	return nil
}

func randomTag() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random file tag: %w", err)
	}
	return "-" + hex.EncodeToString(b[:]), nil
}
