// Tests of assembling the server: what server.New accepts and refuses.

package server_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/config"
	"timestore/internal/server"
	"timestore/internal/testutil/testserver"
)

// Two processes on one data directory would undo each other's cache work:
// the second is refused, and the directory is free again once the first
// closes.
func TestDataDirLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.DataDir = dir }})
	cfg := first.Server.Config
	_, err := server.New(t.Context(), cfg, slog.New(slog.DiscardHandler), server.Options{})
	require.ErrorContains(t, err, "is in use by another timestore process")
	first.Server.Close()
	again, err := server.New(t.Context(), cfg, slog.New(slog.DiscardHandler), server.Options{})
	require.NoError(t, err)
	again.Close()
}

// TestSecurityTokensMustDiffer: a configuration whose data-plane token equals
// its admin token (so that the data-plane token would grant admin access) is
// refused.
func TestSecurityTokensMustDiffer(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.DatabaseURL = "postgres://127.0.0.1:1/none"
	c.Token, c.AdminToken = "same-token-123", "same-token-123"
	err := c.Validate()
	require.ErrorContains(t, err, "must differ")
	require.NotContains(t, err.Error(), "same-token-123")
	_, err = server.New(context.Background(), c, slog.New(slog.DiscardHandler), server.Options{})
	require.ErrorContains(t, err, "must differ")
	c.AdminToken = "other-token-456"
	require.NoError(t, c.Validate())
}
