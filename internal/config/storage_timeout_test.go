package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// storage_timeout: default, file, environment, and a refused zero.
func TestStorageTimeout(t *testing.T) {
	t.Parallel()
	cfg, err := Load("", []string{"TIMESTORE_DATABASE_URL=postgres://x"})
	require.NoError(t, err)
	require.Equal(t, StorageTimeoutDefault, cfg.StorageTimeout)
	require.Less(t, StorageTimeoutDefault, time.Minute, "a hung target must fail the attempt within a minute")

	file := filepath.Join(t.TempDir(), "timestore.yaml")
	require.NoError(t, os.WriteFile(file, []byte("database_url: postgres://x\nstorage_timeout: 45s\n"), 0o600))
	cfg, err = Load(file, nil)
	require.NoError(t, err)
	require.Equal(t, 45*time.Second, cfg.StorageTimeout)
	cfg, err = Load(file, []string{"TIMESTORE_STORAGE_TIMEOUT=2m"})
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, cfg.StorageTimeout, "env wins over file")
	require.NoError(t, cfg.Validate())

	cfg.StorageTimeout = 0
	require.ErrorContains(t, cfg.Validate(), "storage_timeout (TIMESTORE_STORAGE_TIMEOUT) 0s: want a positive duration such as 30s")
	_, err = Load("", []string{"TIMESTORE_STORAGE_TIMEOUT=soon"})
	require.ErrorContains(t, err, `TIMESTORE_STORAGE_TIMEOUT="soon": want a duration such as 30s, 5m or 1h`)
}

// An unreadable environment value says what form it wants, not which Go
// parser failed.
func TestEnvironmentValueHints(t *testing.T) {
	t.Parallel()
	for env, want := range map[string]string{
		"TIMESTORE_QUERY_TIMEOUT=abc":                   `TIMESTORE_QUERY_TIMEOUT="abc": want a duration such as 30s`,
		"TIMESTORE_QUERY_CONCURRENCY=four":              `TIMESTORE_QUERY_CONCURRENCY="four": want a whole number`,
		"TIMESTORE_MAX_BODY_BYTES=10GB":                 `TIMESTORE_MAX_BODY_BYTES="10GB": want a whole number`,
		"TIMESTORE_JOBS_WORKERS=maybe":                  `TIMESTORE_JOBS_WORKERS="maybe": want true or false`,
		"TIMESTORE_DUCKDB_THREADS=99999999999999999999": `TIMESTORE_DUCKDB_THREADS="99999999999999999999": out of range`,
	} {
		_, err := Load("", []string{env})
		require.ErrorContains(t, err, want, env)
		require.NotContains(t, err.Error(), "strconv.", env)
		require.NotContains(t, err.Error(), "time: ", env)
	}
}
