package storage

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// ClockProbePrefix is where ClockOffset writes its probe objects. No
// partition or export key starts with it.
const ClockProbePrefix = "_timestore/clock/"

var unsafeKeyBytes = regexp.MustCompile(`[^A-Za-z0-9._=-]`)

// ClockOffset measures how far the target's clock, the one that stamps
// objects' modification times, is ahead of now() (negative: behind): it
// writes a small probe object, reads back its modification time, and
// deletes it. An object's age on the local clock is then
// now() - (ModTime - offset); comparing ModTimes with the local clock
// directly would make every object look older by the skew between the two
// clocks. The result is precise to the store's time resolution (S3: one
// second).
//
// Every probe has a key of its own (under ClockProbePrefix: the host, the
// process and a random part): processes on one host, and reconciles of
// several datasets in one process, measure the same target at once, and
// with a shared key one deleted the other's probe before it was read.
// Deleting a probe is best effort; a probe left behind (a failed delete, a
// crash) is deleted by a later probe once it is older than
// ClockProbeMaxAge.
func (t *Target) ClockOffset(ctx context.Context, now func() time.Time) (time.Duration, error) {
	host, _ := os.Hostname()
	host = unsafeKeyBytes.ReplaceAllString(host, "_")
	if host == "" {
		host = "host"
	}
	var random [8]byte
	_, _ = rand.Read(random[:])
	key := fmt.Sprintf("%s%s-%d-%x", ClockProbePrefix, host, os.Getpid(), random)
	before := now()
	if err := t.Bucket.Upload(ctx, key, strings.NewReader("timestore clock probe\n")); err != nil {
		return 0, fmt.Errorf("clock probe on target %s: %w", t.Name, err)
	}
	after := now()
	info, err := t.Bucket.Attributes(ctx, key)
	_ = t.Bucket.Delete(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("clock probe on target %s: %w", t.Name, err)
	}
	offset := info.ModTime.Sub(before.Add(after.Sub(before) / 2))
	t.deleteStaleProbes(ctx, info.ModTime)
	return offset, nil
}

// ClockProbeMaxAge is the age, on the target's clock, past which a probe
// object is a leftover: a probe lives for the few milliseconds of one
// ClockOffset call.
const ClockProbeMaxAge = time.Hour

// deleteStaleProbes deletes, best effort, the probes that earlier calls
// left behind: those older than ClockProbeMaxAge at the target's time
// targetNow.
func (t *Target) deleteStaleProbes(ctx context.Context, targetNow time.Time) {
	var stale []string
	_ = t.List(ctx, ClockProbePrefix, func(o ObjectInfo) error {
		if targetNow.Sub(o.ModTime) > ClockProbeMaxAge {
			stale = append(stale, o.Key)
		}
		return nil
	})
	for _, key := range stale {
		_ = t.Bucket.Delete(ctx, key)
	}
}
