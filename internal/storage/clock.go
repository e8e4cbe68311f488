package storage

import (
	"context"
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
// The probe's key is fixed per host (under ClockProbePrefix), so a probe
// that could not be deleted is overwritten by the next one rather than
// piling up; deleting it is best effort.
func (t *Target) ClockOffset(ctx context.Context, now func() time.Time) (time.Duration, error) {
	host, _ := os.Hostname()
	host = unsafeKeyBytes.ReplaceAllString(host, "_")
	if host == "" {
		host = "host"
	}
	key := ClockProbePrefix + host
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
	return info.ModTime.Sub(before.Add(after.Sub(before) / 2)), nil
}
