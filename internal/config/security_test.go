package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/config"
)

// TestSecurityRequestTimeoutConfig: the read limits come from the
// environment like every setting, default to bounded values, and cannot be
// switched off.
func TestSecurityRequestTimeoutConfig(t *testing.T) {
	t.Parallel()
	c, err := config.Load("", nil)
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, c.ReadHeaderTimeout)
	require.Equal(t, 10*time.Minute, c.ReadTimeout)
	c, err = config.Load("", []string{"TIMESTORE_READ_HEADER_TIMEOUT=3s", "TIMESTORE_READ_TIMEOUT=90s"})
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, c.ReadHeaderTimeout)
	require.Equal(t, 90*time.Second, c.ReadTimeout)
	_, err = config.Load("", []string{"TIMESTORE_READ_TIMEOUT=soon"})
	require.ErrorContains(t, err, "TIMESTORE_READ_TIMEOUT")
	for _, env := range []string{"TIMESTORE_READ_HEADER_TIMEOUT=0s", "TIMESTORE_READ_TIMEOUT=-1s"} {
		c, err := config.Load("", []string{"TIMESTORE_DATABASE_URL=postgres://x/y", env})
		require.NoError(t, err)
		require.ErrorContains(t, c.Validate(), "must be positive", env)
	}
}

// TestSecurityRedactConnectionStrings: both forms of catalog connection
// string lose their secrets and keep the rest.
func TestSecurityRedactConnectionStrings(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"host=db port=5432 user=ts password=hunter2 dbname=ts":        "host=db port=5432 user=ts password=REDACTED dbname=ts",
		"host=db password = 'two words' user=ts":                      "host=db password=REDACTED user=ts",
		`host=db password='it\'s secret' user=ts`:                     "host=db password=REDACTED user=ts",
		"host=db password='unterminated secret":                       "host=db password=REDACTED",
		"host=db sslpassword=keypass sslmode=verify-full":             "host=db sslpassword=REDACTED sslmode=verify-full",
		"postgres://ts:hunter2@db/ts?sslmode=disable":                 "postgres://ts:REDACTED@db/ts?sslmode=disable",
		"postgres://ts@db/ts?password=hunter2":                        "postgres://ts@db/ts?password=REDACTED",
		"s3://b?region=x&passwd=hunter2":                              "s3://b?passwd=REDACTED&region=x",
		"s3://b?endpoint=http://127.0.0.1:1&session_token=hunter2abc": "s3://b?endpoint=http%3A%2F%2F127.0.0.1%3A1&session_token=REDACTED",
	} {
		got := config.RedactURL(in)
		require.Equal(t, want, got, in)
		require.NotContains(t, got, "hunter2")
		require.NotContains(t, got, "secret")
	}
}
