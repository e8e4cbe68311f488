package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The node id is created once and read back unchanged; a damaged one is
// refused with what to do.
func TestLoadNodeID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id, err := loadNodeID(dir)
	require.NoError(t, err)
	require.Regexp(t, `^node-[0-9a-f]{16}$`, id)
	again, err := loadNodeID(dir)
	require.NoError(t, err)
	require.Equal(t, id, again, "a restart is the same node")
	other, err := loadNodeID(t.TempDir())
	require.NoError(t, err)
	require.NotEqual(t, id, other, "another data directory is another node")
	leftovers, err := filepath.Glob(filepath.Join(dir, "*.tmp"))
	require.NoError(t, err)
	require.Empty(t, leftovers)

	own := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(own, NodeIDFile), []byte("db-host-1\n"), 0o644))
	id, err = loadNodeID(own)
	require.NoError(t, err)
	require.Equal(t, "db-host-1", id, "an operator's name is kept")

	require.NoError(t, os.WriteFile(filepath.Join(own, NodeIDFile), []byte("Host 1/a"), 0o644))
	_, err = loadNodeID(own)
	require.ErrorContains(t, err, `node id "Host 1/a": want 1 to 63 lower-case letters, digits and '-'`)
	require.ErrorContains(t, err, "remove it to get a new identity")
}
