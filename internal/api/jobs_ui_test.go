package api_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/testutil/testserver"
)

// TestJobsUIShowsJob loads the River UI in headless Chromium and finds a job in it.
func TestJobsUIShowsJob(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err, "chromium is missing: apt-get install chromium (scripts/test.sh does this)")
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "uidemo", "local", "day")
	trig, err := b.Client.RunMaintenance(ctx, "reconcile", "uidemo")
	require.NoError(t, err)
	testserver.WaitJobState(t, b.Client, trig.JobID, "completed")

	profile := t.TempDir()
	shot := filepath.Join(profile, "jobs.png")
	run := func(args ...string) string {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + profile, "--virtual-time-budget=15000", "--window-size=1400,900"}
		out, err := exec.CommandContext(cctx, chromium, append(base, args...)...).Output()
		require.NoError(t, err)
		return string(out)
	}
	page := b.HTTP.URL + "/admin/ui/jobs/" + strconv.FormatInt(trig.JobID, 10)
	dom := run("--dump-dom", page)
	require.Contains(t, dom, "reconcile", "the job page does not show the job's kind")
	require.Contains(t, dom, "uidemo", "the job page does not show the job's dataset")
	run("--screenshot="+shot, page)
	if dir := os.Getenv("TIMESTORE_TEST_ARTIFACTS"); dir != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(filepath.Join(dir, "jobs-ui.png"), b, 0o644)
	}
	st, err := os.Stat(shot)
	require.NoError(t, err)
	require.Greater(t, st.Size(), int64(10000), "screenshot is suspiciously small")
}
