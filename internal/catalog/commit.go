package catalog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ActionPartitionPrefix prefixes the audit action of a committed change: the
// row Commit writes for a change has action "partition." + Change.Operation,
// e.g. "partition.ingest" or "partition.retention".
const ActionPartitionPrefix = "partition."

// Commit applies ch atomically. In one transaction it locks the dataset row,
// replays an already used idempotency key, checks that every Remove id is live
// and every Restore id is removed but not purged, bumps manifest_version by
// one, adds, removes and restores partitions, records the manifest version,
// writes the audit rows and the idempotency record, and runs ch.InTx last.
//
// Errors: ErrNotFound (no such live dataset), ErrConflict (a Remove or Restore
// id does not qualify, or an added object is already referenced; the message
// names it), ErrIdempotencyMismatch, ErrInvalid (a malformed change, including
// an empty one that adds, removes and restores nothing). On any error nothing
// was changed.
func (s *Store) Commit(ctx context.Context, ch Change) (CommitResult, error) {
	if err := ch.validate(); err != nil {
		return CommitResult{}, fmt.Errorf("commit %s to dataset %q: %w", ch.Operation, ch.Dataset, invalid(err))
	}
	var res CommitResult
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		d, err := lockDataset(ctx, tx, ch.Dataset)
		if err != nil {
			return err
		}
		if ch.IdempotencyKey != "" {
			rec, found, err := lookupIdempotency(ctx, tx, d.ID, ch.IdempotencyKey)
			if err != nil {
				return err
			}
			if found {
				if rec.RequestHash != ch.RequestHash {
					return fmt.Errorf("idempotency key %q: %w", ch.IdempotencyKey, ErrIdempotencyMismatch)
				}
				res = CommitResult{
					Version:           rec.Version,
					Replayed:          true,
					RowsWritten:       rec.RowsWritten,
					PartitionsWritten: rec.PartitionsWritten,
				}
				return nil
			}
		}
		res, err = applyChange(ctx, tx, d, ch)
		return err
	})
	if err != nil {
		return CommitResult{}, fmt.Errorf("commit %s to dataset %q: %w", ch.Operation, ch.Dataset, err)
	}
	return res, nil
}

// GroupOutcome is what CommitGroup did with one member of a group.
type GroupOutcome struct {
	// Result is the member's own result: its partitions and rows, and the
	// group's manifest version (or, on a replay, the first request's).
	Result CommitResult
	// Err is the member's own failure, which failed no other member:
	// ErrInvalid (a malformed change) or ErrIdempotencyMismatch. Nothing of
	// a member with Err was written.
	Err error
}

// CommitGroup applies changes that only add partitions to one dataset, such
// as concurrent ingests, in one transaction and one manifest version, and
// returns each member's outcome in the order given:
//
//  1. Validate each change alone; one that is malformed, or removes,
//     restores or runs InTx (which a group cannot share), fails alone.
//  2. Lock the dataset row, as Commit does.
//  3. Look up the members' idempotency keys: a used key with the same
//     request hash is a replay of the first result; with another hash the
//     member fails alone with ErrIdempotencyMismatch. A key used twice in
//     the group is applied once, the later members replaying the first.
//  4. Bump manifest_version by one and add every remaining member's files in
//     it; record one manifest version (its summary lists the members) and,
//     per member, its audit row, its Audit rows and its idempotency record.
//
// A member's result counts only its own partitions; every applied member
// shares the group's Version. The returned error is the group's: the
// dataset missing (ErrNotFound), an added object already referenced
// (ErrConflict; retrying the members one by one finds which), changes to
// different datasets or with different operations (ErrInvalid), or the
// database failing. With that error nothing was changed, unless the COMMIT
// itself failed, whose outcome is then unknown for every member.
func (s *Store) CommitGroup(ctx context.Context, changes []Change) ([]GroupOutcome, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	first := changes[0]
	for _, ch := range changes[1:] {
		if ch.Dataset != first.Dataset || ch.Operation != first.Operation {
			return nil, fmt.Errorf("commit group to dataset %q: %w", first.Dataset,
				invalid(fmt.Errorf("a group takes one dataset and one operation, got %s to %q and %s to %q",
					first.Operation, first.Dataset, ch.Operation, ch.Dataset)))
		}
	}
	out := make([]GroupOutcome, len(changes))
	for i, ch := range changes {
		err := ch.validate()
		if err == nil && (len(ch.Remove) > 0 || len(ch.Restore) > 0 || ch.InTx != nil) {
			err = errors.New("a group commit only adds partitions: commit a change that removes, restores or runs in the transaction alone")
		}
		if err != nil {
			out[i].Err = fmt.Errorf("commit %s to dataset %q: %w", ch.Operation, ch.Dataset, invalid(err))
		}
	}
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		d, err := lockDataset(ctx, tx, first.Dataset)
		if err != nil {
			return err
		}
		apply, err := replayGroup(ctx, tx, d, changes, out)
		if err != nil || len(apply) == 0 {
			return err
		}
		return applyGroup(ctx, tx, d, changes, apply, out)
	})
	if err != nil {
		return nil, fmt.Errorf("commit group of %d %s changes to dataset %q: %w", len(changes), first.Operation, first.Dataset, err)
	}
	return out, nil
}

// replayGroup settles the members of a group whose idempotency key was used
// before or earlier in the group (step 3 of CommitGroup), filling their
// outcomes, and returns the indexes of the members to apply. A member
// replaying another member of the group has its result filled by
// applyGroup.
func replayGroup(ctx context.Context, tx pgx.Tx, d Dataset, changes []Change, out []GroupOutcome) ([]int, error) {
	var keys []string
	for i, ch := range changes {
		if out[i].Err == nil && ch.IdempotencyKey != "" {
			keys = append(keys, ch.IdempotencyKey)
		}
	}
	used := map[string]IdempotencyRecord{}
	if len(keys) > 0 {
		rows, err := tx.Query(ctx, `
			SELECT `+idempotencyColumns+` FROM timestore.idempotency_keys
			WHERE dataset_id = $1 AND key = ANY($2)`, d.ID, keys)
		recs, err := collect(rows, err, scanIdempotency)
		if err != nil {
			return nil, fmt.Errorf("look up idempotency keys: %w", err)
		}
		for _, r := range recs {
			used[r.Key] = r
		}
	}
	var apply []int
	inGroup := map[string]string{} // key -> request hash of the member applying it
	for i, ch := range changes {
		if out[i].Err != nil {
			continue
		}
		key := ch.IdempotencyKey
		rec, found := used[key]
		hash, taken := inGroup[key]
		switch {
		case key == "":
			apply = append(apply, i)
		case found && rec.RequestHash != ch.RequestHash, taken && hash != ch.RequestHash:
			out[i].Err = fmt.Errorf("commit %s to dataset %q: idempotency key %q: %w", ch.Operation, ch.Dataset, key, ErrIdempotencyMismatch)
		case found:
			out[i].Result = CommitResult{Version: rec.Version, Replayed: true, RowsWritten: rec.RowsWritten, PartitionsWritten: rec.PartitionsWritten}
		case taken:
			out[i].Result.Replayed = true // applyGroup copies the first member's counts
		default:
			inGroup[key] = ch.RequestHash
			apply = append(apply, i)
		}
	}
	return apply, nil
}

// applyGroup does the writing part of CommitGroup (step 4) for the members
// apply, with the dataset row locked, and fills their outcomes and those of
// members replaying them. Its statements go to the database in one round
// trip (see commitPipeline).
func applyGroup(ctx context.Context, tx pgx.Tx, d Dataset, changes []Change, apply []int, out []GroupOutcome) error {
	version := d.ManifestVersion + 1
	var files []PartitionFile
	for _, i := range apply {
		files = append(files, changes[i].Add...)
	}
	var p commitPipeline
	added := queuePartitions(&p, d.ID, version, files)
	actors := make([]string, 0, len(apply))
	members := make([]map[string]any, 0, len(apply))
	for _, i := range apply {
		ch := changes[i]
		if !slices.Contains(actors, ch.Actor) {
			actors = append(actors, ch.Actor)
		}
		members = append(members, map[string]any{"actor": ch.Actor, "idempotency_key": ch.IdempotencyKey,
			"partitions": len(ch.Add), "summary": ch.Summary})
	}
	first := changes[apply[0]]
	summary := map[string]any{"group_size": len(apply), "members": members}
	queueManifestVersion(&p, d.ID, version, first.Operation, nil, strings.Join(actors, ","), summary)
	for _, i := range apply {
		res, err := queueRecord(&p, d, version, changes[i], 0, 0, map[string]any{"group_size": len(apply)})
		if err != nil {
			return err
		}
		out[i].Result = res
	}
	queueBumpVersion(&p, d.ID, version)
	if err := p.send(ctx, tx); err != nil {
		return err
	}

	byKey := map[string]CommitResult{}
	rest := *added
	for _, i := range apply {
		ch := changes[i]
		out[i].Result.Added = rest[:len(ch.Add):len(ch.Add)]
		rest = rest[len(ch.Add):]
		if ch.IdempotencyKey != "" {
			byKey[ch.IdempotencyKey] = out[i].Result
		}
	}
	for i, ch := range changes {
		if first, ok := byKey[ch.IdempotencyKey]; ok && out[i].Err == nil && out[i].Result.Replayed {
			out[i].Result = CommitResult{Version: version, Replayed: true, RowsWritten: first.RowsWritten, PartitionsWritten: first.PartitionsWritten}
		}
	}
	return nil
}

// applyChange does the writing part of Commit, with the dataset row locked:
// after checkTouched, its statements go to the database in one round trip
// (see commitPipeline), then ch.InTx runs.
func applyChange(ctx context.Context, tx pgx.Tx, d Dataset, ch Change) (CommitResult, error) {
	removedBytes, restoredBytes, err := checkTouched(ctx, tx, d.ID, ch.Remove, ch.Restore)
	if err != nil {
		return CommitResult{}, err
	}
	version := d.ManifestVersion + 1
	var p commitPipeline
	added := queuePartitions(&p, d.ID, version, ch.Add)
	if len(ch.Remove) > 0 {
		p.exec("remove partitions", `
			UPDATE timestore.partitions SET removed_in_version = $2, removed_at = now()
			WHERE id = ANY($1)`, ch.Remove, version)
	}
	if len(ch.Restore) > 0 {
		p.exec("restore partitions", `
			UPDATE timestore.partitions SET removed_in_version = NULL, removed_at = NULL
			WHERE id = ANY($1)`, ch.Restore)
	}
	queueManifestVersion(&p, d.ID, version, ch.Operation, ch.JobID, ch.Actor, ch.Summary)
	res, err := queueRecord(&p, d, version, ch, removedBytes, restoredBytes, nil)
	if err != nil {
		return CommitResult{}, err
	}
	queueBumpVersion(&p, d.ID, version)
	if err := p.send(ctx, tx); err != nil {
		return CommitResult{}, err
	}
	res.Added = *added
	if ch.InTx != nil {
		if err := ch.InTx(ctx, tx, version, res.Added); err != nil {
			return CommitResult{}, fmt.Errorf("in transaction: %w", err)
		}
	}
	return res, nil
}

// queueBumpVersion queues the statement that makes version the dataset's
// current manifest version.
func queueBumpVersion(p *commitPipeline, datasetID, version int64) {
	p.exec("bump manifest version",
		`UPDATE timestore.datasets SET manifest_version = $2 WHERE id = $1`, datasetID, version)
}

// queueRecord queues what records one change in version: its audit row
// (with extra details merged in; its partitions are the ids of the files
// ch.Add, read by the statement itself, then ch.Remove and ch.Restore), the
// change's own Audit rows and its idempotency record. The statements follow
// those adding ch.Add in p. It returns the change's result, Added left for
// the caller to fill once p is sent; an Audit row without an action fails
// it with ErrInvalid before anything is sent.
func queueRecord(p *commitPipeline, d Dataset, version int64, ch Change, removedBytes, restoredBytes int64, extra map[string]any) (CommitResult, error) {
	res := CommitResult{Version: version, PartitionsWritten: int64(len(ch.Add))}
	var addedBytes int64
	for _, f := range ch.Add {
		res.RowsWritten += f.RowCount
		addedBytes += f.SizeBytes
	}
	details := map[string]any{
		"manifest_version": version,
		"job_id":           ch.JobID,
		"added":            len(ch.Add),
		"removed":          len(ch.Remove),
		"restored":         len(ch.Restore),
		"added_bytes":      addedBytes,
		"removed_bytes":    removedBytes,
		"restored_bytes":   restoredBytes,
		"summary":          ch.Summary,
	}
	maps.Copy(details, extra)
	queueChangeAudit(p, AuditEntry{
		Actor:      ch.Actor,
		Action:     ActionPartitionPrefix + ch.Operation,
		Dataset:    d.Name,
		Partitions: append(append(make([]int64, 0, len(ch.Remove)+len(ch.Restore)), ch.Remove...), ch.Restore...),
		Bytes:      addedBytes + removedBytes + restoredBytes,
		Reason:     ch.Reason,
		Details:    details,
	}, ch.Add)
	for _, e := range ch.Audit {
		if e.Dataset == "" {
			e.Dataset = d.Name
		}
		if e.Actor == "" {
			e.Actor = ch.Actor
		}
		if err := queueAudit(p, e); err != nil {
			return CommitResult{}, err
		}
	}
	if ch.IdempotencyKey != "" {
		queueIdempotency(p, d.ID, ch.IdempotencyKey, ch.RequestHash, version, res.RowsWritten, res.PartitionsWritten)
	}
	return res, nil
}

// commitPipeline holds the statements of a manifest change that follow the
// dataset row lock, to be sent in one round trip (a pgx batch, pipelined):
// each statement is queued with a reader of its result, and send runs the
// readers in order, stopping at the first error, after which the database
// has run none of the later statements. Statements see the writes of those
// queued before them, as in any transaction.
type commitPipeline struct {
	batch   pgx.Batch
	readers []func(pgx.BatchResults) error
}

// exec queues sql, whose failure send returns wrapped in what.
func (p *commitPipeline) exec(what, sql string, args ...any) {
	p.batch.Queue(sql, args...)
	p.readers = append(p.readers, func(r pgx.BatchResults) error {
		if _, err := r.Exec(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// queryRow queues sql, returning one row that send hands to read.
func (p *commitPipeline) queryRow(read func(pgx.Row) error, sql string, args ...any) {
	p.batch.Queue(sql, args...)
	p.readers = append(p.readers, func(r pgx.BatchResults) error { return read(r.QueryRow()) })
}

// send runs the queued statements in tx in one round trip and reads their
// results in order; it returns the first error.
func (p *commitPipeline) send(ctx context.Context, tx pgx.Tx) error {
	if p.batch.Len() == 0 {
		return nil
	}
	results := tx.SendBatch(ctx, &p.batch)
	var err error
	for _, read := range p.readers {
		if err = read(results); err != nil {
			break
		}
	}
	if cerr := results.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// checkTouched locks the Remove and Restore partitions and checks that every
// Remove id is live in the dataset and every Restore id is removed and not
// purged. It returns the bytes of each set.
func checkTouched(ctx context.Context, tx pgx.Tx, datasetID int64, remove, restore []int64) (removedBytes, restoredBytes int64, err error) {
	if len(remove)+len(restore) == 0 {
		return 0, 0, nil
	}
	ids := append(append(make([]int64, 0, len(remove)+len(restore)), remove...), restore...)
	byID, err := lockPartitions(ctx, tx, datasetID, ids)
	if err != nil {
		return 0, 0, err
	}
	if removedBytes, err = bytesInState(byID, remove, "remove", StateLive); err != nil {
		return 0, 0, err
	}
	if restoredBytes, err = bytesInState(byID, restore, "restore", StateRemoved); err != nil {
		return 0, 0, err
	}
	return removedBytes, restoredBytes, nil
}

// bytesInState sums the bytes of the partitions ids, looked up in byID,
// which must all be in state want; the first that is missing or in another
// state makes it return an ErrConflict naming it and verb.
func bytesInState(byID map[int64]Partition, ids []int64, verb, want string) (int64, error) {
	var bytes int64
	for _, id := range ids {
		p, ok := byID[id]
		switch {
		case !ok:
			return 0, fmt.Errorf("%w: %s partition %d: no such partition in this dataset", ErrConflict, verb, id)
		case p.State() != want && p.RemovedInVersion != nil && want == StateLive:
			return 0, fmt.Errorf("%w: %s partition %d: it is %s, not live (removed in version %d)", ErrConflict, verb, id, p.State(), *p.RemovedInVersion)
		case p.State() != want:
			return 0, fmt.Errorf("%w: %s partition %d: it is %s, not %s", ErrConflict, verb, id, p.State(), want)
		}
		bytes += p.SizeBytes
	}
	return bytes, nil
}

// queuePartitions queues the statements adding files to the manifest in
// version and returns where their partitions, with their ids, will be once
// p is sent, in the order given. An object already referenced by another
// partition fails the send with ErrConflict naming its key.
func queuePartitions(p *commitPipeline, datasetID, version int64, files []PartitionFile) *[]Partition {
	var added []Partition // nil when files is empty, as before
	for _, f := range files {
		p.queryRow(func(row pgx.Row) error {
			part, err := scanPartition(row)
			if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "partitions_object" {
				err = fmt.Errorf("%w: add partition %s: object already referenced by another partition", ErrConflict, f.Key)
			}
			if err != nil {
				return fmt.Errorf("add partition %s: %w", f.Key, err)
			}
			added = append(added, part)
			return nil
		}, `
			INSERT INTO timestore.partitions (dataset_id, window_start, time_min, time_max, row_count,
				size_bytes, target, object_key, checksum, stats, level, added_in_version)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			RETURNING `+partitionColumns,
			datasetID, f.WindowStart, f.TimeMin, f.TimeMax, f.RowCount,
			f.SizeBytes, f.Target, f.Key, f.Checksum, f.Stats, f.Level, version)
	}
	return &added
}

// validate checks what can be checked without the database.
func (ch Change) validate() error {
	if ch.Operation == "" {
		return errors.New("operation is required")
	}
	if len(ch.Add)+len(ch.Remove)+len(ch.Restore) == 0 {
		return errors.New("empty change: nothing to add, remove or restore")
	}
	seen := make(map[int64]bool, len(ch.Remove)+len(ch.Restore))
	for _, ids := range [][]int64{ch.Remove, ch.Restore} {
		for _, id := range ids {
			if seen[id] {
				return fmt.Errorf("partition %d listed twice in remove/restore", id)
			}
			seen[id] = true
		}
	}
	keys := make(map[string]bool, len(ch.Add))
	for i, f := range ch.Add {
		switch {
		case f.Target == "" || f.Key == "":
			return fmt.Errorf("add[%d]: target and key are required", i)
		case keys[f.Target+"\x00"+f.Key]:
			return fmt.Errorf("add[%d]: key %q listed twice", i, f.Key)
		case f.TimeMin.IsZero() || f.TimeMax.IsZero() || f.WindowStart.IsZero():
			return fmt.Errorf("add[%d]: window_start, time_min and time_max are required", i)
		case f.TimeMax.Before(f.TimeMin):
			return fmt.Errorf("add[%d]: time_max %s is before time_min %s", i, f.TimeMax, f.TimeMin)
		case f.RowCount < 0 || f.SizeBytes < 0 || f.Level < 0:
			return fmt.Errorf("add[%d]: row_count, size_bytes and level must not be negative", i)
		}
		keys[f.Target+"\x00"+f.Key] = true
	}
	return nil
}
