package storage_test

import (
	"os"
	"testing"

	"timestore/internal/testutil/s3test"
)

func TestMain(m *testing.M) {
	s3test.SetCredentialsEnv()
	os.Exit(m.Run())
}
