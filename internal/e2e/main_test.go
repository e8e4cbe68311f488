// Package e2e holds end-to-end tests that run real `timestore serve`
// processes (internal/testutil/nodetest) against the machine's Postgres and
// real versitygw servers: crash points (SIGKILL at every fault point,
// restart, recovery) and multi-node operation.
package e2e

import (
	"os"
	"testing"

	"timestore/internal/testutil/nodetest"
	"timestore/internal/testutil/s3test"
)

func TestMain(m *testing.M) {
	s3test.SetCredentialsEnv()
	code := m.Run()
	s3test.StopShared()
	nodetest.Cleanup()
	os.Exit(code)
}
