package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/robfig/cron/v3"
)

// Defaults for policy fields left unset.
const (
	// TargetFileBytesDefault is the size compaction aims at for one file: 128 MiB.
	TargetFileBytesDefault int64 = 128 << 20
	// MinInputFilesDefault is the fewest small files compaction merges at once.
	MinInputFilesDefault = 4
	// CompactionScheduleDefault is how often compaction is considered.
	CompactionScheduleDefault = "@every 15m"
	// RetentionScheduleDefault is how often retention is evaluated.
	RetentionScheduleDefault = "@every 1h"
	// ExportScheduleDefault is how often exports are considered.
	ExportScheduleDefault = "@daily"
	// GraceDefault is how long a removed partition stays restorable before the sweeper may delete it.
	GraceDefault = Duration(60 * 60 * 1e9)
)

// Policy is a dataset's lifecycle policy. Every field is optional.
type Policy struct {
	Compaction *Compaction `json:"compaction,omitempty"`
	Retention  *Retention  `json:"retention,omitempty"`
	Export     *Export     `json:"export,omitempty"`
}

// Compaction configures merging of small adjacent partitions.
type Compaction struct {
	// Enabled turns scheduled compaction on. Defaults to true when the section is present.
	Enabled *bool `json:"enabled,omitempty"`
	// TargetFileBytes is the output size compaction aims at; files at or above it are left alone.
	// Defaults to TargetFileBytesDefault.
	// In JSON a number of bytes or a size with a unit ("128MiB", "100MB"; see ParseSize).
	TargetFileBytes int64 `json:"target_file_bytes,omitempty" policy:"size"`
	// MinInputFiles is the fewest partitions merged at once. Defaults to MinInputFilesDefault.
	MinInputFiles int `json:"min_input_files,omitempty"`
	// Schedule is a cron expression or "@every <duration>". Defaults to CompactionScheduleDefault.
	Schedule string `json:"schedule,omitempty"`
}

// Retention configures pruning of old data.
type Retention struct {
	// MaxAge prunes partitions whose newest row is older than now - MaxAge. Zero: no age limit.
	MaxAge Duration `json:"max_age,omitempty"`
	// MaxBytes prunes the oldest partitions until live bytes fit. Zero: no size limit.
	// In JSON a number of bytes or a size with a unit ("10GB", "512MiB"; see ParseSize).
	MaxBytes int64 `json:"max_bytes,omitempty" policy:"size"`
	// MinKeep is a floor: data newer than now - MinKeep is never pruned.
	MinKeep Duration `json:"min_keep,omitempty"`
	// Grace is how long removed partitions stay restorable before the sweeper deletes them.
	// Defaults to GraceDefault; zero is allowed (running queries are still protected by leases).
	Grace *Duration `json:"grace,omitempty"`
	// RequireExport keeps data until a verified export covers it.
	RequireExport bool `json:"require_export,omitempty"`
	// Schedule is a cron expression or "@every <duration>". Defaults to RetentionScheduleDefault.
	Schedule string `json:"schedule,omitempty"`
}

// Export configures Parquet snapshots of cold data.
type Export struct {
	// Enabled turns scheduled export on. Defaults to true when the section is present.
	Enabled *bool `json:"enabled,omitempty"`
	// Target names the storage target exports are written to.
	Target string `json:"target,omitempty"`
	// After is how old a window's data must be before it is exported.
	After Duration `json:"after,omitempty"`
	// Window is the export granularity: "day" or "month". Defaults to "day".
	Window string `json:"window,omitempty"`
	// Schedule is a cron expression or "@every <duration>". Defaults to ExportScheduleDefault.
	Schedule string `json:"schedule,omitempty"`
}

// Parse decodes a policy document strictly (unknown fields are errors) and
// validates it. Every error names the field's path ("policy.retention.max_age"),
// shows the value refused and says what is accepted; docs/policy.md
// describes every field.
func Parse(b []byte) (Policy, error) {
	var p Policy
	if len(bytes.TrimSpace(b)) == 0 {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return Policy{}, fmt.Errorf("policy: not valid JSON: %w", err)
	}
	if dec.More() {
		return Policy{}, fmt.Errorf("policy: unexpected data after the policy object")
	}
	if !bytes.Equal(raw, []byte("null")) {
		if err := decodeObject("policy", raw, reflect.ValueOf(&p).Elem()); err != nil {
			return Policy{}, err
		}
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a cron expression (5 fields) or a descriptor such as "@every 15m" or "@daily".
func ParseSchedule(s string) (cron.Schedule, error) {
	sched, err := cronParser.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid schedule %q: %v; write a cron expression of 5 fields (\"*/15 * * * *\") or a descriptor (\"@every 15m\", \"@hourly\", \"@daily\")", s, err)
	}
	return sched, nil
}

// Validate reports the first invalid field, naming it.
func (p Policy) Validate() error {
	if c := p.Compaction; c != nil {
		if c.TargetFileBytes < 0 {
			return fmt.Errorf("policy.compaction.target_file_bytes: must not be negative, not %d", c.TargetFileBytes)
		}
		if c.MinInputFiles < 0 || c.MinInputFiles == 1 {
			return fmt.Errorf("policy.compaction.min_input_files: must be at least 2, not %d (leave it out for the default, %d)", c.MinInputFiles, MinInputFilesDefault)
		}
		if c.Schedule != "" {
			if _, err := ParseSchedule(c.Schedule); err != nil {
				return fmt.Errorf("policy.compaction.schedule: %v", err)
			}
		}
	}
	if r := p.Retention; r != nil {
		if r.MaxBytes < 0 {
			return fmt.Errorf("policy.retention.max_bytes: must not be negative, not %d", r.MaxBytes)
		}
		if r.Schedule != "" {
			if _, err := ParseSchedule(r.Schedule); err != nil {
				return fmt.Errorf("policy.retention.schedule: %v", err)
			}
		}
	}
	if e := p.Export; e != nil {
		switch e.Window {
		case "", "day", "month":
		default:
			return fmt.Errorf("policy.export.window: must be \"day\" or \"month\", not %q", e.Window)
		}
		if e.Schedule != "" {
			if _, err := ParseSchedule(e.Schedule); err != nil {
				return fmt.Errorf("policy.export.schedule: %v", err)
			}
		}
		if (e.Enabled == nil || *e.Enabled) && e.Target == "" {
			return fmt.Errorf("policy.export.target: required when export is enabled: name a storage target (see docs/configuration.md), or set \"enabled\": false")
		}
	}
	return nil
}
