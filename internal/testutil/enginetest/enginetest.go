// Package enginetest runs a package's tests around one real DuckDB engine
// shared by all of them (they run in parallel against it) and the package's
// shared versitygw, if any test started one.
package enginetest

import (
	"fmt"
	"os"
	"testing"

	"timestore/internal/engine"
	"timestore/internal/testutil/s3test"
)

// Main sets the S3 test credentials, opens an engine into *eng, runs the
// tests, then closes the engine and stops the shared versitygw. It returns
// the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(enginetest.Main(m, &testEngine)) }
func Main(m *testing.M, eng **engine.Engine) int {
	s3test.SetCredentialsEnv()
	e, err := engine.New(engine.Config{Threads: 2, MemoryLimit: "1GB"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*eng = e
	code := m.Run()
	if err := e.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	s3test.StopShared()
	return code
}
