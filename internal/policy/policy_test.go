package policy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"0": 0, "30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute,
		"1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, " 2h ": 2 * time.Hour,
	} {
		got, err := ParseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "soon", "-1h", "-3d", "1.5d", "d", "3dd", "99999999d", "1d-1h", "1w"} {
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
