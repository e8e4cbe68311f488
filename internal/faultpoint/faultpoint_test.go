package faultpoint_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"timestore/internal/faultpoint"
)

func TestConfigureRejectsBadSpecs(t *testing.T) {
	for _, spec := range []string{
		"nope=kill", "ingest.after_upload", "ingest.after_upload=explode",
		"ingest.after_upload=kill@0", "ingest.after_upload=kill@x",
	} {
		if err := faultpoint.Configure(spec); err == nil {
			t.Errorf("Configure(%q) accepted a bad spec", spec)
		}
	}
	t.Cleanup(func() { _ = faultpoint.Configure("") })
}

func TestErrorFiresOnNthHitOnly(t *testing.T) {
	ctx := context.Background()
	if faultpoint.Enabled() {
		t.Fatal("points armed before any Configure")
	}
	if err := faultpoint.Configure("sweep.mid_delete=error@3"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = faultpoint.Configure("") })
	for i := 1; i <= 5; i++ {
		err := faultpoint.Hit(ctx, faultpoint.SweepMidDelete)
		if (i == 3) != (err != nil) {
			t.Fatalf("hit %d: err = %v", i, err)
		}
		if err != nil && !errors.Is(err, faultpoint.ErrInjected) {
			t.Fatalf("hit %d: %v does not wrap ErrInjected", i, err)
		}
		if err := faultpoint.Hit(ctx, faultpoint.SweepBeforeDelete); err != nil {
			t.Fatalf("unarmed point fired: %v", err)
		}
	}
}

func TestArmRunsHookUntilDisarmed(t *testing.T) {
	ctx := context.Background()
	calls := 0
	disarm := faultpoint.Arm(faultpoint.ExportAfterUpload, func(context.Context) error { calls++; return nil })
	_ = faultpoint.Hit(ctx, faultpoint.ExportAfterUpload)
	_ = faultpoint.Hit(ctx, faultpoint.ExportAfterUpload)
	disarm()
	_ = faultpoint.Hit(ctx, faultpoint.ExportAfterUpload)
	if calls != 2 {
		t.Fatalf("hook ran %d times, want 2", calls)
	}
	if faultpoint.Enabled() {
		t.Fatal("still enabled after disarm")
	}
}

// TestKillFromEnvironment runs this test binary with the variable set and
// checks it dies of SIGKILL at the point, after announcing it.
func TestKillFromEnvironment(t *testing.T) {
	if os.Getenv("FAULTPOINT_CHILD") == "1" {
		_ = faultpoint.Hit(context.Background(), faultpoint.IngestAfterUpload)
		os.Exit(0) // reached only if the point did not fire
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillFromEnvironment$")
	cmd.Env = append(os.Environ(), "FAULTPOINT_CHILD=1", faultpoint.Env+"=ingest.after_upload=kill")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child did not die: %v\n%s", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL\n%s", ws, out)
	}
	if !strings.Contains(string(out), "fault point ingest.after_upload: kill") {
		t.Fatalf("no announcement in output:\n%s", out)
	}
}
