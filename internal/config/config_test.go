package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoadOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "timestore.yaml")
	require.NoError(t, os.WriteFile(file, []byte("database_url: postgres://file\nlisten: 127.0.0.1:9000\nquery_timeout: 5s\ntargets:\n  remote: s3://from-file\n"), 0o600))
	cfg, err := Load(file, []string{"TIMESTORE_LISTEN=127.0.0.1:9100", "TIMESTORE_TARGET_ARCHIVE=s3://archive", "PATH=/bin"})
	require.NoError(t, err)
	require.Equal(t, "postgres://file", cfg.DatabaseURL)
	require.Equal(t, "127.0.0.1:9100", cfg.Listen, "env wins over file")
	require.Equal(t, 5*time.Second, cfg.QueryTimeout)
	require.Equal(t, map[string]string{"remote": "s3://from-file", "archive": "s3://archive"}, cfg.Targets)
	require.Equal(t, DataDirDefault, cfg.DataDir)
	require.NoError(t, cfg.Validate())

	// A missing default file is fine; a missing named file is not.
	_, err = Load(filepath.Join(dir, "nope", "timestore.yaml"), nil)
	require.NoError(t, err)
	_, err = Load(filepath.Join(dir, "other.yaml"), nil)
	require.Error(t, err)
	// Unknown keys and bad values are errors.
	require.NoError(t, os.WriteFile(file, []byte("listn: x\n"), 0o600))
	_, err = Load(file, nil)
	require.ErrorContains(t, err, "listn")
	_, err = Load("", []string{"TIMESTORE_QUERY_TIMEOUT=soon"})
	require.ErrorContains(t, err, "TIMESTORE_QUERY_TIMEOUT")

	// The native ingest threshold: 1 MiB by default, 0 turns it off.
	require.Equal(t, int64(1<<20), Default().NativeIngestMaxBytes)
	cfg, err = Load("", []string{"TIMESTORE_NATIVE_INGEST_MAX_BYTES=0"})
	require.NoError(t, err)
	require.Zero(t, cfg.NativeIngestMaxBytes)
	_, err = Load("", []string{"TIMESTORE_NATIVE_INGEST_MAX_BYTES=1MiB"})
	require.ErrorContains(t, err, "TIMESTORE_NATIVE_INGEST_MAX_BYTES")
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Default()
	ok.DatabaseURL = "postgres://x"
	require.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*Config){
		"database":  func(c *Config) { c.DatabaseURL = "" },
		"listen":    func(c *Config) { c.Listen = "8080" },
		"body":      func(c *Config) { c.MaxBodyBytes = 0 },
		"native":    func(c *Config) { c.NativeIngestMaxBytes = -1 },
		"logformat": func(c *Config) { c.LogFormat = "xml" },
		"local":     func(c *Config) { c.Targets = map[string]string{"local": "s3://x"} },
	} {
		c := ok
		c.Targets = map[string]string{}
		mut(&c)
		require.Error(t, c.Validate(), name)
	}
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	c := Default()
	c.DatabaseURL = "postgres://user:hunter2@db:5432/ts?sslpassword=s3cret&application_name=x"
	c.AdminToken = "admin-secret-token"
	c.Token = "data-secret-token"
	c.Targets = map[string]string{"remote": "s3://b?endpoint=http://h&secret_access_key=AKIAXX&region=us-east-1"}
	out := c.YAML()
	for _, secret := range []string{"hunter2", "s3cret", "admin-secret-token", "data-secret-token", "AKIAXX"} {
		require.NotContains(t, out, secret)
	}
	require.True(t, strings.Contains(out, "user:") && strings.Contains(out, "region=us-east-1") && strings.Contains(out, "application_name=x"), out)
	require.Equal(t, "admin-secret-token", c.AdminToken, "the original is unchanged")
}

func TestListensOnLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "localhost:1": true, "[::1]:80": true, "0.0.0.0:8080": false, ":8080": false, "10.0.0.1:80": false} {
		c := Config{Listen: addr}
		require.Equal(t, want, c.ListensOnLoopback(), addr)
	}
}

func TestJobsFromEnvironment(t *testing.T) {
	c, err := Load("", []string{
		"TIMESTORE_JOBS_WORKERS=false", "TIMESTORE_JOBS_MAX_WORKERS=3", "TIMESTORE_JOBS_MAX_ATTEMPTS=7",
		"TIMESTORE_JOBS_JOB_TIMEOUT=10s", "TIMESTORE_JOBS_RESCUE_AFTER=12s", "TIMESTORE_JOBS_SCHEDULER_INTERVAL=2s",
		"TIMESTORE_JOBS_RECONCILE_SCHEDULE=off", "TIMESTORE_JOBS_RECONCILE_SAFETY_AGE=5s",
	})
	if err != nil {
		t.Fatal(err)
	}
	j := c.Jobs
	if j.Workers == nil || *j.Workers || j.MaxWorkers != 3 || j.MaxAttempts != 7 || j.JobTimeout != 10*time.Second ||
		j.RescueAfter != 12*time.Second || j.SchedulerInterval != 2*time.Second || j.ReconcileSchedule != "off" ||
		j.ReconcileSafetyAge != 5*time.Second {
		t.Fatalf("jobs config = %+v", j)
	}
	if _, err := Load("", []string{"TIMESTORE_JOBS_JOB_TIMEOUT=soon"}); err == nil || !strings.Contains(err.Error(), "TIMESTORE_JOBS_JOB_TIMEOUT") {
		t.Fatalf("bad duration: err = %v", err)
	}
}
