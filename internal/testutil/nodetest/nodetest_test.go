package nodetest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"timestore/internal/testutil/nodetest"
	"timestore/internal/testutil/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nodetest.Cleanup()
	os.Exit(code)
}

func TestNodeKillRestart(t *testing.T) {
	ctx := context.Background()
	n := nodetest.Start(t, nodetest.Config{DatabaseURL: pgtest.NewDatabaseURL(t)})
	if _, err := n.Client.ListDatasets(ctx); err != nil {
		t.Fatal(err)
	}
	n.Kill()
	if n.Running() {
		t.Fatal("still running after Kill")
	}
	if _, err := n.Client.ListDatasets(ctx); err == nil {
		t.Fatal("a killed node answered")
	}
	n.Restart()
	if _, err := n.Client.ListDatasets(ctx); err != nil {
		t.Fatal(err)
	}
	// A bad fault point spec stops the process at start, with a clear message.
	n.Kill()
	if err := n.StartNoWait("TIMESTORE_FAULTPOINTS=nope=kill"); err != nil {
		t.Fatal(err)
	}
	if killed, err := n.WaitExit(30 * time.Second); err != nil || killed {
		t.Fatalf("WaitExit = %v, %v; want a plain exit", killed, err)
	}
	if err := n.WaitLog(ctx, `unknown fault point "nope"`, time.Second); err != nil {
		t.Fatal(err)
	}
}
