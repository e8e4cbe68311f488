package policy

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"0": 0, "30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute,
		"1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, " 2h ": 2 * time.Hour,
		"1w": 7 * 24 * time.Hour, "2w3d12h": (17*24 + 12) * time.Hour,
	} {
		got, err := ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "soon", "-1h", "-3d", "1.5d", "d", "3dd", "99999999d", "1d-1h", "1d1w", "1.5w", "30 days", "5300w", "90000000m", "876601h"} {
		_, err := ParseDuration(in)
		require.Error(t, err, in)
	}
}

func TestDurationJSONRoundTrip(t *testing.T) {
	t.Parallel()
	p, err := Parse([]byte(`{"retention":{"max_age":"30d","min_keep":"36h","grace":"0"}}`))
	require.NoError(t, err)
	require.Equal(t, 30*24*time.Hour, p.Retention.MaxAge.Std())
	require.Equal(t, time.Duration(0), p.Retention.Grace.Std())
	require.Equal(t, "30d", p.Retention.MaxAge.String())
	require.Equal(t, "36h", p.Retention.MinKeep.String())
	for d, want := range map[time.Duration]string{
		0: "0s", time.Hour: "1h", 90 * time.Minute: "1h30m", time.Hour + time.Second: "1h0m1s",
		10 * time.Minute: "10m", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s", 48 * time.Hour: "2d",
	} {
		got := Duration(d).String()
		require.Equal(t, want, got, d)
		back, err := ParseDuration(got)
		require.NoError(t, err, got)
		require.Equal(t, d, back, got)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	for doc, field := range map[string]string{
		`{"retention":{"max_age":"soon"}}`:               "soon",
		`{"retention":{"max_age":30}}`:                   "duration",
		`{"retention":{"max_bytes":"10XB"}}`:             "max_bytes",
		`{"retention":{"max_bytes":-1}}`:                 "max_bytes",
		`{"retention":{"schedule":"every day"}}`:         "retention.schedule",
		`{"compaction":{"min_input_files":1}}`:           "min_input_files",
		`{"compaction":{"schedule":"@every"}}`:           "compaction.schedule",
		`{"export":{"window":"week","target":"remote"}}`: "export.window",
		`{"export":{"enabled":true}}`:                    "export.target",
		`{"retention":{"maxage":"1d"}}`:                  "maxage",
		`{"compaction":{"enabled":true}} {"x":1}`:        "",
		`[1,2]`: "",
	} {
		_, err := Parse([]byte(doc))
		require.Error(t, err, doc)
		require.Contains(t, err.Error(), field, doc)
	}
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	start := time.Date(2024, 1, 1, 0, 7, 0, 0, time.UTC)
	for spec, next := range map[string]time.Time{
		"@every 15m":   start.Add(15 * time.Minute),
		"@daily":       time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		"*/10 * * * *": time.Date(2024, 1, 1, 0, 10, 0, 0, time.UTC),
	} {
		s, err := ParseSchedule(spec)
		require.NoError(t, err, spec)
		require.Equal(t, next, s.Next(start), spec)
	}
}

// TestParseMessages: each refused policy names the field's path, shows the
// value and says what to write instead.
func TestParseMessages(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string][]string{
		`{"retention":{"max_age":"30 days"}}`:                {"policy.retention.max_age", `"30 days"`, `write "30d"`, "without spaces", "w (7 days)"},
		`{"retention":{"max_age":"-5d"}}`:                    {"policy.retention.max_age", `"-5d"`, "negative", `write "5d"`},
		`{"retention":{"min_keep":"1.5d"}}`:                  {"policy.retention.min_keep", `"1.5d"`, "whole number of days", `write "36h"`},
		`{"export":{"target":"t","after":"soon"}}`:           {"policy.export.after", `"soon"`, "units: w (7 days), d (24 hours), h"},
		`{"retention":{"grace":60}}`:                         {"policy.retention.grace", "duration string", "not 60"},
		`{"retention":{"max_bytes":"10 G"}}`:                 {"policy.retention.max_bytes", `"10 G"`, "ambiguous", "GB (powers of 1000)", "GiB (powers of 1024)"},
		`{"retention":{"max_bytes":"ten"}}`:                  {"policy.retention.max_bytes", `"ten"`, `"10GB"`, `"512MiB"`},
		`{"retention":{"max_bytes":-1}}`:                     {"policy.retention.max_bytes", "-1", "negative"},
		`{"retention":{"max_bytes":1.5}}`:                    {"policy.retention.max_bytes", "1.5", "whole number of bytes"},
		`{"retention":{"max_bytes":true}}`:                   {"policy.retention.max_bytes", "true", "must be a size"},
		`{"compaction":{"target_file_bytes":"1.0000001KB"}}`: {"policy.compaction.target_file_bytes", "whole number of bytes"},
		`{"compaction":{"enabled":"yes"}}`:                   {"policy.compaction.enabled", "true or false", `"yes"`},
		`{"compaction":{"min_input_files":"4"}}`:             {"policy.compaction.min_input_files", "a whole number", `"4"`},
		`{"compaction":{"min_input_files":1}}`:               {"policy.compaction.min_input_files", "at least 2", "not 1"},
		`{"retention":{"schedule":"hourly"}}`:                {"policy.retention.schedule", `"hourly"`, "@every 15m"},
		`{"retention":{"maxage":"1d"}}`:                      {"policy.retention.maxage", "unknown field", "max_age, max_bytes, min_keep", "docs/policy.md"},
		`{"retentoin":{}}`:                                   {"policy.retentoin", "unknown field", "compaction, retention, export"},
		`{"retention":[]}`:                                   {"policy.retention", "JSON object", `"max_age":"30d"`},
		`[1,2]`:                                              {"policy", "JSON object"},
		`{"export":{"after":"1d"}}`:                          {"policy.export.target", "required", "docs/configuration.md", `"enabled": false`},
	} {
		_, err := Parse([]byte(doc))
		require.Error(t, err, doc)
		for _, w := range want {
			require.Contains(t, err.Error(), w, doc)
		}
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "10GB": 10e9, "10gb": 10e9, "10 GB": 10e9, "512MiB": 512 << 20, "1KiB": 1024,
		"1kB": 1000, "1.5GB": 1.5e9, "1.5GiB": 3 << 29, "2TiB": 2 << 40, "100B": 100, "7.0MB": 7e6,
	} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "10G", "10 M", "GB", ".", "1.2.3MB", "10XB", "0.1B", "1e3", "9999999999PB", "99999999999999999999", "1.00000000000000000001KB"} {
		_, err := ParseSize(in)
		require.Error(t, err, in)
	}
	// Sizes in a policy: a string with a unit, or a plain number of bytes.
	p, err := Parse([]byte(`{"retention":{"max_bytes":"10GB"},"compaction":{"target_file_bytes":134217728}}`))
	require.NoError(t, err)
	require.Equal(t, int64(10e9), p.Retention.MaxBytes)
	require.Equal(t, int64(128<<20), p.Compaction.TargetFileBytes)
	p, err = Parse([]byte(`{"compaction":{"target_file_bytes":"64MiB"}}`))
	require.NoError(t, err)
	require.Equal(t, int64(64<<20), p.Compaction.TargetFileBytes)
}

// TestParseCompatible: what encoding/json accepted is still accepted
// (keys matched ignoring case, null for unset).
func TestParseCompatible(t *testing.T) {
	t.Parallel()
	p, err := Parse([]byte(`{"Retention":{"MAX_AGE":"2d","grace":null},"export":null}`))
	require.NoError(t, err)
	require.Equal(t, 48*time.Hour, p.Retention.MaxAge.Std())
	require.Nil(t, p.Retention.Grace)
	require.Nil(t, p.Export)
	p, err = Parse([]byte(`null`))
	require.NoError(t, err)
	require.Equal(t, Policy{}, p)
}

// TestDocsDescribeEveryField fails when a policy field (found by walking the
// policy's Go types) has no entry in docs/policy.md.
func TestDocsDescribeEveryField(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/policy.md")
	require.NoError(t, err)
	doc := string(b)
	paths := FieldPaths()
	require.Contains(t, paths, "retention.max_age")
	require.Contains(t, paths, "compaction.target_file_bytes")
	for _, path := range paths {
		// An entry is a table row or heading naming the full path.
		require.Truef(t, strings.Contains(doc, "| `"+path+"` |") || strings.Contains(doc, "### `"+path+"`"),
			"docs/policy.md has no entry for the policy field %s (a table row \"| `%s` |\" with type, default, example and meaning)", path, path)
	}
}
