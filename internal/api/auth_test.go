package api_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/config"
	"timestore/internal/testutil/testserver"
)

func status(t *testing.T, method, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestTokens(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.Token = "data-token"
		c.AdminToken = "admin-token"
		c.Listen = "0.0.0.0:8080"
	}})
	u := b.HTTP.URL
	for _, path := range []string{"/admin/v1/audit", "/admin/v1/jobs", "/admin/ui/"} {
		require.Equal(t, 401, status(t, "GET", u+path, ""), path)
		require.Equal(t, 401, status(t, "GET", u+path, "wrong"), path)
		require.Equal(t, 403, status(t, "GET", u+path, "data-token"), path)
		require.NotContains(t, []int{401, 403}, status(t, "GET", u+path, "admin-token"), path)
	}
	require.Equal(t, 200, status(t, "GET", u+"/admin/v1/audit", "admin-token"))
	require.Equal(t, 401, status(t, "GET", u+"/v1/datasets", ""))
	require.Equal(t, 401, status(t, "GET", u+"/v1/datasets", "wrong"))
	require.Equal(t, 200, status(t, "GET", u+"/v1/datasets", "data-token"))
	require.Equal(t, 200, status(t, "GET", u+"/v1/datasets", "admin-token"))
	// Health and metrics stay open for probes and scrapers.
	require.Equal(t, 200, status(t, "GET", u+"/healthz", ""))
	require.Equal(t, 200, status(t, "GET", u+"/metrics", ""))
}

func TestAdminRefusedOffLoopbackWithoutToken(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Listen = "0.0.0.0:8080" }})
	require.Equal(t, 403, status(t, "GET", b.HTTP.URL+"/admin/v1/audit", ""))
	require.Equal(t, 403, status(t, "GET", b.HTTP.URL+"/admin/v1/audit", "anything"))
	require.Equal(t, 200, status(t, "GET", b.HTTP.URL+"/v1/datasets", ""))

	loop := testserver.Start(t, testserver.Options{})
	require.Equal(t, 200, status(t, "GET", loop.HTTP.URL+"/admin/v1/audit", ""))
}

// Without a data-plane token /v1 is open (API.md): a token the server does
// not know, e.g. a client's stale TIMESTORE_TOKEN, does not turn it away.
// The admin token still guards /admin.
func TestOpenDataPlaneIgnoresUnknownTokens(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.AdminToken = "admin-token"
		c.Listen = "0.0.0.0:8080"
	}})
	u := b.HTTP.URL
	require.Equal(t, 200, status(t, "GET", u+"/v1/datasets", ""))
	require.Equal(t, 200, status(t, "GET", u+"/v1/datasets", "stale-token"))
	require.Equal(t, 200, status(t, "GET", u+"/v1/datasets", "admin-token"))
	require.Equal(t, 401, status(t, "GET", u+"/admin/v1/audit", "stale-token"))
	require.Equal(t, 200, status(t, "GET", u+"/admin/v1/audit", "admin-token"))
}
