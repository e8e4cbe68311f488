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
	require.ErrorContains(t, cfg.Validate(), "storage timeout 0s: want a positive duration such as 30s")
	_, err = Load("", []string{"TIMESTORE_STORAGE_TIMEOUT=soon"})
	require.ErrorContains(t, err, "TIMESTORE_STORAGE_TIMEOUT")
}
