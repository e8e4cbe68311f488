// Package e2e holds the end-to-end tests. Some run real `timestore serve`
// processes (internal/testutil/nodetest) against the machine's Postgres and
// real versitygw servers: crash points (SIGKILL at every fault point,
// restart, recovery) and multi-node operation. The others drive a complete
// in-process server (internal/testutil/testserver) the way an operator does:
// lifecycle jobs through the CLI, and storage and database faults (S3
// stopped, Postgres connections killed) in the middle of a job.
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
