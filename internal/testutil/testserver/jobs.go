package testserver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/client"
)

// WaitJobState polls job id through the admin API until it is in state want
// and returns it; the test fails if the job finishes in another state or is
// not in want within 60 seconds.
func WaitJobState(t testing.TB, c *client.Client, id int64, want string) client.Job {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j, err := c.Job(context.Background(), id)
		require.NoError(t, err)
		if j.State == want {
			return j
		}
		require.False(t, j.Finished(), "job %d ended %s, want %s: %+v", id, j.State, want, j.Errors)
		require.True(t, time.Now().Before(deadline), "job %d still %s after 60s", id, j.State)
		time.Sleep(50 * time.Millisecond)
	}
}
