// Package testserver starts a complete in-process timestore for tests: a fresh
// catalog database, real DuckDB, the local target and optionally an S3 target
// on a real versitygw, served by httptest.
package testserver

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/config"
	"timestore/internal/jobs"
	"timestore/internal/server"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

// Options shape the server.
type Options struct {
	// S3 adds a target "remote" on a fresh bucket of the package's shared versitygw.
	S3 bool
	// S3Server, if set, is the versitygw of the target "remote" (a fresh
	// bucket on it) instead of the shared one, so that the test can stop and
	// restart it. It implies S3.
	S3Server *s3test.Server
	// AfterUpload is the ingest fault-injection hook.
	AfterUpload func(ctx context.Context, files []catalog.PartitionFile) error
	// MaxBodyBytes overrides the ingest body limit.
	MaxBodyBytes int64
	// Configure changes the config before the server starts.
	Configure func(*config.Config)
	// Jobs changes the job service's options; by default jobs run with
	// River's test intervals and a 1s scheduler interval.
	Jobs func(*jobs.Options)
	// NoWorkers leaves the job workers and scheduler stopped.
	NoWorkers bool
	// TracerProvider receives the server's spans (e.g. an in-memory recorder).
	TracerProvider trace.TracerProvider
	// Logger receives the server's log; by default it is discarded.
	Logger *slog.Logger
}

// Bundle is a running test server.
type Bundle struct {
	Server   *server.Server
	HTTP     *httptest.Server
	Client   *client.Client
	Registry *prometheus.Registry
	DBURL    string
}

var (
	s3once sync.Once
	s3srv  *s3test.Server
)

// S3URL returns a fresh bucket URL on a versitygw shared by the test binary.
// Call s3test.SetCredentialsEnv from TestMain first.
func S3URL(t testing.TB) string {
	s3once.Do(func() { s3srv = s3test.StartShared() })
	return s3srv.NewBucket(t)
}

// Start starts a server whose resources are released when the test ends.
func Start(t testing.TB, o Options) *Bundle {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDatabaseURL(t)
	_, err := server.Migrate(ctx, dbURL)
	require.NoError(t, err)
	cfg := config.Default()
	cfg.DatabaseURL = dbURL
	cfg.DataDir = t.TempDir()
	cfg.DuckDBThreads = 2
	cfg.DuckDBMemoryLimit = "1GB"
	if o.MaxBodyBytes > 0 {
		cfg.MaxBodyBytes = o.MaxBodyBytes
	}
	switch {
	case o.S3Server != nil:
		cfg.Targets["remote"] = o.S3Server.NewBucket(t)
	case o.S3:
		cfg.Targets["remote"] = S3URL(t)
	}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	reg := prometheus.NewRegistry()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(ctx, cfg, log, server.Options{Registry: reg, AfterUpload: o.AfterUpload, TracerProvider: o.TracerProvider, Jobs: func(jo *jobs.Options) {
		jo.TestOnly = true
		jo.SchedulerInterval = time.Second
		if o.Jobs != nil {
			o.Jobs(jo)
		}
	}})
	require.NoError(t, err)
	if !o.NoWorkers {
		require.NoError(t, srv.Start(ctx))
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(sctx); err != nil {
			t.Logf("stop jobs: %v", err)
		}
		srv.Close()
	})
	return &Bundle{Server: srv, HTTP: hs, Client: client.New(hs.URL, cfg.Token), Registry: reg, DBURL: dbURL}
}
