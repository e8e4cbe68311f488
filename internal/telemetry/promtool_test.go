package telemetry_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/policy"
	"timestore/internal/query"
	"timestore/internal/storage"
	"timestore/internal/testutil/pgtest"
)

// repoRoot is the module root, relative to this package's directory (where
// go test runs the tests).
var repoRoot = filepath.Join("..", "..")

// promtool returns the path of promtool, failing the test when it is not
// installed: the checks it runs must not be skipped silently.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (%v). It comes with the Debian package prometheus: "+
			"apt-get update && apt-get install -y prometheus (installs /usr/bin/promtool); scripts/test.sh does this.", err)
	}
	return path
}

// runPromtool runs promtool with args and stdin, failing the test with its
// output when it exits non-zero. It returns the combined output.
func runPromtool(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(repoRoot, "deploy", "prometheus")
	t.Run("check", func(t *testing.T) {
		t.Parallel()
		out := runPromtool(t, nil, "check", "rules", filepath.Join(dir, "alerts.yml"))
		require.Contains(t, out, "SUCCESS")
	})
	t.Run("unit tests", func(t *testing.T) {
		t.Parallel()
		out := runPromtool(t, nil, "test", "rules", filepath.Join(dir, "alerts_test.yml"))
		require.Contains(t, out, "SUCCESS")
	})
}

// requireCleanExposition checks the text exposition of g with promtool check
// metrics: it exits non-zero on problems and prints them, so any output at
// all is a failure too.
func requireCleanExposition(t *testing.T, g prometheus.Gatherer) []byte {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	out := runPromtool(t, buf.Bytes(), "check", "metrics")
	require.Empty(t, strings.TrimSpace(out), "promtool check metrics found problems")
	return buf.Bytes()
}

// projectRegistry builds a pedantic registry holding every metric family
// that can be built in-process without a running server, each with at least
// one sample: the runtime collectors of telemetry.NewRegistry, the catalog
// collector over a real catalog, the storage cache, and the ingest and query
// services (driven through their error paths, which need no engine).
func projectRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	ctx := t.Context()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store := pgtest.NewStore(t)
	_, err := store.CreateDataset(ctx, catalog.Dataset{
		Name:       "cpu",
		Columns:    []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}, {Name: "v", Type: catalog.TypeDouble}},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
		Target:     storage.LocalTargetName,
		Policy:     policy.Policy{Retention: &policy.Retention{MaxAge: policy.Duration(24 * time.Hour)}},
	}, "test")
	require.NoError(t, err)
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	res, err := store.Commit(ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpIngest, Actor: "test",
		Add: []catalog.PartitionFile{
			{WindowStart: day, TimeMin: day, TimeMax: day.Add(time.Hour), RowCount: 10, SizeBytes: 100,
				Target: storage.LocalTargetName, Key: "cpu/a.parquet", Checksum: "sha256:00"},
			{WindowStart: day.AddDate(0, 0, 1), TimeMin: day.AddDate(0, 0, 1), TimeMax: day.AddDate(0, 0, 1).Add(time.Hour),
				RowCount: 20, SizeBytes: 200, Target: storage.LocalTargetName, Key: "cpu/b.parquet", Checksum: "sha256:00"},
		}})
	require.NoError(t, err)
	_, err = store.Commit(ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpRetention, Actor: "test",
		Remove: []int64{res.Added[0].ID}})
	require.NoError(t, err)
	reg.MustRegister(catalog.NewCollector(store, nil))

	_, err = storage.NewCache(t.TempDir(), 1<<20, reg)
	require.NoError(t, err)

	in := ingest.New(ingest.Options{Store: store, TempDir: t.TempDir(), Registerer: reg})
	_, err = in.Ingest(ctx, ingest.Request{Dataset: "no_such_dataset", Format: engine.FormatCSV, Body: strings.NewReader("ts\n")})
	require.Error(t, err)

	q := query.New(query.Options{Store: store, Registerer: reg})
	from := day
	_, err = q.Run(ctx, query.Request{Dataset: "cpu", SQL: "SELECT 1", From: &from, To: &from})
	require.Error(t, err, "an empty time range is refused before the engine is needed")
	return reg
}

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	exposition := string(requireCleanExposition(t, projectRegistry(t)))
	for _, want := range []string{
		`timestore_partitions{dataset="cpu",state="live",target="local"} 1`,
		`timestore_partition_bytes{dataset="cpu",state="removed",target="local"} 100`,
		`timestore_partition_rows{dataset="cpu",state="live",target="local"} 20`,
		`timestore_manifest_version{dataset="cpu"} 2`,
		`timestore_oldest_live_data_age_seconds{dataset="cpu"}`,
		`timestore_sweep_lag_seconds{dataset="cpu"}`,
		`timestore_sweep_grace_seconds{dataset="cpu"} 3600`,
		`timestore_catalog_collect_success 1`,
		`timestore_storage_cache_bytes 0`,
		`timestore_ingest_requests_total{outcome="error"} 1`,
		`timestore_query_duration_seconds_count{outcome="invalid"} 1`,
		`go_goroutines`,
	} {
		require.Contains(t, exposition, want)
	}
}

// metricNameRE matches the project's metric names.
var metricNameRE = regexp.MustCompile(`\btimestore_[a-z0-9_]+\b`)

// documentedMetrics returns the metric names docs/metrics.md lists in its
// tables (a row starting with | `name`).
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	require.NoError(t, err)
	var names []string
	for line := range strings.Lines(string(doc)) {
		if name, ok := strings.CutPrefix(line, "| `"); ok {
			if i := strings.IndexByte(name, '`'); i > 0 {
				names = append(names, name[:i])
			}
		}
	}
	return names
}

// familyOf maps a sample name of a histogram or summary to its family.
func familyOf(name string, documented []string) string {
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(documented, base) {
			return base
		}
	}
	return name
}

// TestMetricsDocumented checks that docs/metrics.md lists every metric the
// alert rules use and every project metric family built in-process.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel()
	documented := documentedMetrics(t)
	require.NotEmpty(t, documented)

	rules, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "alerts.yml"))
	require.NoError(t, err)
	for _, name := range metricNameRE.FindAllString(string(rules), -1) {
		require.Contains(t, documented, familyOf(name, documented), "alerts.yml uses %s", name)
	}

	mfs, err := projectRegistry(t).Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "timestore_") {
			require.Contains(t, documented, mf.GetName(), "docs/metrics.md does not list %s", mf.GetName())
		}
	}
}
