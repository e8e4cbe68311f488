package storage_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/storage"
)

func TestRedactedURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"file:///var/lib/timestore/objects", "file:///var/lib/timestore/objects"},
		{
			"s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true",
			"s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true",
		},
		{"s3://user:hunter2@bucket?region=x", "s3://user:REDACTED@bucket?region=x"},
		{"s3://user@bucket", "s3://user@bucket"},
		{
			"s3://b?region=x&secret_access_key=S3CR3T&access_key_id=AK&X-Amz-Signature=abc&X-Amz-Credential=cred&X-Amz-Security-Token=tok&sig=s&password=p&session_token=st",
			"s3://b?region=x&secret_access_key=REDACTED&access_key_id=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Security-Token=REDACTED&sig=REDACTED&password=REDACTED&session_token=REDACTED",
		},
		{"https://host/p#frag-with-token", "https://host/p#REDACTED"},
		{"s3://b?%zz_token=abc&%zz=visible", "s3://b?%zz_token=REDACTED&%zz=visible"},
		{"s3://b\x00?secret=x", "s3://REDACTED"},
		{"not a url with spaces:secret\x7f", "REDACTED"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, storage.RedactedURL(tt.in), tt.in)
	}
}

func TestTargetStringHidesSecrets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// mem:// ignores userinfo and rejects unknown parameters; use a file
	// URL whose parse fails to check the error message too.
	raw := "s3://user:topsecretpw@bucket?region=us-east-1&endpoint=http://127.0.0.1:1&secret=alsosecret1"
	_, err := storage.NewTarget(ctx, "remote", raw)
	require.Error(t, err) // "secret" is not an s3blob parameter
	require.NotContains(t, err.Error(), "topsecretpw")
	require.NotContains(t, err.Error(), "alsosecret1")

	tgt, err := storage.NewTarget(ctx, "remote", "s3://user:topsecretpw@bucket?region=us-east-1&endpoint=http://127.0.0.1:1")
	require.NoError(t, err)
	defer tgt.Bucket.Close()
	require.NotContains(t, tgt.String(), "topsecretpw")
	require.Contains(t, tgt.String(), "remote")
	require.Contains(t, tgt.RedactedURL(), "user:REDACTED@bucket")
	require.Empty(t, tgt.LocalDir)
}

func TestTargetsFromEnv(t *testing.T) {
	t.Parallel()
	got := storage.TargetsFromEnv([]string{
		"PATH=/usr/bin",
		"TIMESTORE_TARGET_ARCHIVE=s3://archive?region=us-east-1",
		"TIMESTORE_TARGET_Cold_2=file:///mnt/cold",
		"TIMESTORE_TARGET_=s3://nameless",
		"TIMESTORE_TARGET_EMPTY=",
		"TIMESTORE_TARGETS=s3://not-a-target",
		"TIMESTORE_TARGET_EQ=s3://b?x=a=b",
		"NOEQUALS",
	})
	require.Equal(t, map[string]string{
		"archive": "s3://archive?region=us-east-1",
		"cold_2":  "file:///mnt/cold",
		"eq":      "s3://b?x=a=b",
	}, got)
}
