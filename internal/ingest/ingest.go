// Package ingest turns a request body into partition files: it spools the
// body, has the engine parse and split it by partition window, uploads each
// file under a fresh key and then references all of them in one manifest
// change. Files are written before they are referenced; after a failure
// (an upload that failed, even if it may have landed, or a commit that did
// not take them) the uploads are discarded through the catalog's discard
// protocol (objects.Uploads.Discard; reconcile reclaims anything left).
//
// Concurrent requests into one dataset share manifest commits (group
// commit, committer.go): one catalog transaction and manifest version for
// the requests whose uploads are done while another commit runs.
//
// The rules it follows (write before reference, unknown commit outcomes,
// group commit): docs/design.md.
package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/faultpoint"
	"timestore/internal/objects"
	"timestore/internal/storage"
)

// UploadConcurrencyDefault is how many partition files one request uploads at once.
const UploadConcurrencyDefault = 4

// Request is one ingest call.
type Request struct {
	// Dataset names the dataset.
	Dataset string
	// Format of Body.
	Format engine.Format
	// Body is read to the end (bound it before, e.g. with http.MaxBytesReader).
	Body io.Reader
	// IdempotencyKey, when set, makes a retried request a no-op returning the first result.
	IdempotencyKey string
	// Actor is recorded in the audit log.
	Actor string
}

// Result is what an ingest did (or, on a replay, what the first request did).
type Result struct {
	RowsWritten       int64 `json:"rows_written"`
	PartitionsWritten int64 `json:"partitions_written"`
	ManifestVersion   int64 `json:"manifest_version"`
	Replayed          bool  `json:"replayed,omitempty"`
}

// Store is what ingest needs of the catalog; *catalog.Store has it.
type Store interface {
	GetDataset(ctx context.Context, name string) (catalog.Dataset, error)
	LookupIdempotency(ctx context.Context, datasetID int64, key string) (catalog.IdempotencyRecord, bool, error)
	Commit(ctx context.Context, ch catalog.Change) (catalog.CommitResult, error)
	CommitGroup(ctx context.Context, changes []catalog.Change) ([]catalog.GroupOutcome, error)
	objects.Discarder
}

var _ Store = (*catalog.Store)(nil)

// Options configures a Service.
type Options struct {
	Store   Store
	Targets *storage.Targets
	Engine  *engine.Engine
	// TempDir holds spooled bodies and parquet files before upload.
	TempDir string
	Logger  *slog.Logger
	// Registerer receives the ingest metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// UploadConcurrency defaults to UploadConcurrencyDefault.
	UploadConcurrency int
	// AfterUpload, when set, runs after every file is uploaded and before the
	// commit; an error aborts the ingest there. A fault-injection point for tests.
	AfterUpload func(ctx context.Context, files []catalog.PartitionFile) error
	// CommitTimeout bounds the manifest commit, which is not cancelled with
	// the request (see Ingest). Defaults to CommitTimeoutDefault.
	CommitTimeout time.Duration
	// GroupCommitMax bounds how many concurrent requests into one dataset
	// share one manifest commit (group commit, see Ingest). Defaults to
	// GroupCommitMaxDefault; 1 commits every request alone.
	GroupCommitMax int
}

// CommitTimeoutDefault is the default Options.CommitTimeout.
const CommitTimeoutDefault = 30 * time.Second

// Service ingests rows.
type Service struct {
	opts      Options
	metrics   *metrics
	committer *committer
}

type metrics struct {
	rows     *prometheus.CounterVec
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration prometheus.Histogram
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.UploadConcurrency <= 0 {
		opts.UploadConcurrency = UploadConcurrencyDefault
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = CommitTimeoutDefault
	}
	if opts.GroupCommitMax <= 0 {
		opts.GroupCommitMax = GroupCommitMaxDefault
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(opts.Registerer)
	groupSize := f.NewHistogram(prometheus.HistogramOpts{
		Name: "timestore_ingest_commit_group_size", Help: "Ingest requests committed together in one manifest commit (group commit).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 8),
	})
	c := &committer{store: opts.Store, max: opts.GroupCommitMax, timeout: opts.CommitTimeout, size: groupSize,
		queues: map[string][]*member{}}
	return &Service{opts: opts, committer: c, metrics: &metrics{
		rows: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_ingest_rows_total", Help: "Rows ingested and committed, by dataset.",
		}, []string{"dataset"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_ingest_requests_total", Help: "Ingest requests by outcome (ok, replayed, invalid, error).",
		}, []string{"outcome"}),
		bytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_ingest_written_bytes_total", Help: "Parquet bytes written by ingest, by dataset.",
		}, []string{"dataset"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "timestore_ingest_duration_seconds", Help: "Duration of successful ingest requests.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}}
}

// Ingest runs one request. Bad input comes back as *engine.InputError and
// changes nothing.
//
// Concurrent requests into one dataset whose uploads are done share one
// manifest commit (group commit): each is answered with its own rows and
// partitions, the group's manifest version, only after that commit ended.
// A request whose change cannot apply (an idempotency key reused with
// another body) fails alone; a commit that fails fails every member of its
// group, and each discards its uploads as a failed commit does.
func (s *Service) Ingest(ctx context.Context, req Request) (res Result, err error) {
	start := time.Now()
	defer func() {
		outcome := "ok"
		var ie *engine.InputError
		switch {
		case errors.As(err, &ie):
			outcome = "invalid"
		case err != nil:
			outcome = "error"
		case res.Replayed:
			outcome = "replayed"
		}
		s.metrics.requests.WithLabelValues(outcome).Inc()
		if err == nil && !res.Replayed {
			s.metrics.duration.Observe(time.Since(start).Seconds())
		}
	}()

	ds, err := s.opts.Store.GetDataset(ctx, req.Dataset)
	if err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp(s.opts.TempDir, "ingest-")
	if err != nil {
		return Result{}, fmt.Errorf("ingest: temp dir: %w", err)
	}
	defer os.RemoveAll(work)

	// The body's hash identifies the request for an idempotency key only
	// (catalog.Change.RequestHash): without a key nothing reads it.
	bodyPath, hash, size, err := spool(req.Body, work, req.IdempotencyKey != "")
	if err != nil {
		return Result{}, err
	}
	if size == 0 {
		return Result{}, &engine.InputError{Message: "empty body: send at least one row"}
	}
	if req.IdempotencyKey != "" {
		rec, found, err := s.opts.Store.LookupIdempotency(ctx, ds.ID, req.IdempotencyKey)
		if err != nil {
			return Result{}, err
		}
		if found {
			if rec.RequestHash != hash {
				return Result{}, catalog.ErrIdempotencyMismatch
			}
			return Result{RowsWritten: rec.RowsWritten, PartitionsWritten: rec.PartitionsWritten, ManifestVersion: rec.Version, Replayed: true}, nil
		}
	}

	outDir := work + "/out"
	if err := os.Mkdir(outDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	windows, err := s.opts.Engine.PrepareIngest(ctx, ds, req.Format, bodyPath, outDir)
	if err != nil {
		return Result{}, err
	}
	target, err := s.opts.Targets.Get(ds.Target)
	if err != nil {
		return Result{}, fmt.Errorf("ingest into %s: %w", ds.Name, err)
	}

	if err := faultpoint.Hit(ctx, faultpoint.IngestBeforeUpload); err != nil {
		return Result{}, err
	}
	actor := req.Actor
	if actor == "" {
		actor = "ingest"
	}
	uploads := &objects.Uploads{Store: s.opts.Store, Dataset: ds, Target: target, Actor: actor,
		Concurrency: s.opts.UploadConcurrency, DiscardTimeout: s.opts.CommitTimeout, Logger: s.opts.Logger}
	files, err := s.upload(ctx, ds, uploads, windows)
	if err == nil {
		err = faultpoint.Hit(ctx, faultpoint.IngestAfterUpload)
	}
	if err == nil && s.opts.AfterUpload != nil {
		err = s.opts.AfterUpload(ctx, files)
	}
	var cr catalog.CommitResult
	if err == nil {
		// Once the files are uploaded the commit runs to its end even if
		// the client goes away: a commit cut short leaves its outcome
		// unknown, and finishing it is cheap. The committer waits for it
		// whatever ctx does.
		cr, err = s.committer.commit(ctx, catalog.Change{
			Dataset:        ds.Name,
			Operation:      catalog.OpIngest,
			Actor:          req.Actor,
			Add:            files,
			IdempotencyKey: req.IdempotencyKey,
			RequestHash:    hash,
			Summary:        map[string]any{"format": string(req.Format), "body_bytes": size},
		})
	}
	if err != nil || cr.Replayed {
		// Remove what we uploaded unless the manifest references it: a
		// failed commit may still have committed (its outcome unknown) and
		// a replay references the first request's files, not ours.
		reason := "ingest failed before its manifest change took the object"
		if cr.Replayed {
			reason = "idempotent replay: the first request's objects are the ones referenced"
		}
		uploads.Discard(ctx, reason)
	}
	if err != nil {
		return Result{}, err
	}
	if err := faultpoint.Hit(ctx, faultpoint.IngestAfterCommit); err != nil {
		return Result{}, err
	}
	if !cr.Replayed {
		s.metrics.rows.WithLabelValues(ds.Name).Add(float64(cr.RowsWritten))
		var written int64
		for _, f := range files {
			written += f.SizeBytes
		}
		s.metrics.bytes.WithLabelValues(ds.Name).Add(float64(written))
		s.opts.Logger.InfoContext(ctx, "ingested", "dataset", ds.Name, "rows", cr.RowsWritten,
			"partitions", cr.PartitionsWritten, "manifest_version", cr.Version, "duration", time.Since(start))
	}
	return Result{RowsWritten: cr.RowsWritten, PartitionsWritten: cr.PartitionsWritten, ManifestVersion: cr.Version, Replayed: cr.Replayed}, nil
}

// spoolChunk is the size of the buffers spool reads the body into.
const spoolChunk = 256 << 10

// spoolBuffers recycles spool's buffers across requests: fresh memory costs
// a page fault per 4 KiB on first touch.
var spoolBuffers = sync.Pool{New: func() any { b := make([]byte, spoolChunk); return &b }}

// spool copies the body to a file, returning its path, size and, with hash
// set, its sha256. The hash is computed on another goroutine, overlapping the
// reads of the body and the writes to the file (SHA-256 runs at well under a
// GB/s).
func spool(body io.Reader, dir string, hash bool) (string, string, int64, error) {
	f, err := os.CreateTemp(dir, "body-")
	if err != nil {
		return "", "", 0, fmt.Errorf("ingest: spool body: %w", err)
	}
	defer f.Close()
	if !hash {
		b := spoolBuffers.Get().(*[]byte)
		defer spoolBuffers.Put(b)
		// struct{ io.Writer } hides os.File.ReadFrom, which would copy
		// through a buffer of its own, a tenth of the size.
		n, err := io.CopyBuffer(struct{ io.Writer }{f}, body, *b)
		if err != nil {
			return "", "", 0, fmt.Errorf("ingest: read body: %w", err)
		}
		if err := f.Close(); err != nil {
			return "", "", 0, fmt.Errorf("ingest: spool body: %w", err)
		}
		return f.Name(), "", n, nil
	}

	h := sha256.New()
	const inFlight = 4
	toHash := make(chan *[]byte, inFlight)
	hashed := make(chan *[]byte, inFlight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range toHash {
			h.Write(*b)
			hashed <- b
		}
	}()
	bufs := make([]*[]byte, inFlight)
	for i := range bufs {
		bufs[i] = spoolBuffers.Get().(*[]byte)
	}
	defer func() {
		for _, b := range bufs {
			*b = (*b)[:spoolChunk]
			spoolBuffers.Put(b)
		}
	}()
	free := make(chan *[]byte, inFlight)
	for _, b := range bufs {
		free <- b
	}
	var n int64
	var copyErr error
	for {
		var b *[]byte
		select {
		case b = <-free:
		case b = <-hashed:
		}
		*b = (*b)[:spoolChunk]
		// ReadFull fails, with EOF or ErrUnexpectedEOF at the end of
		// the body, only when it fills less than the buffer.
		m, rerr := io.ReadFull(body, *b)
		if m == 0 {
			free <- b
		} else if _, werr := f.Write((*b)[:m]); werr != nil {
			free <- b
			copyErr = fmt.Errorf("ingest: spool body: %w", werr)
			break
		} else {
			n += int64(m)
			*b = (*b)[:m]
			toHash <- b
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
				copyErr = fmt.Errorf("ingest: read body: %w", rerr)
			}
			break
		}
	}
	close(toHash)
	<-done
	if copyErr != nil {
		return "", "", 0, copyErr
	}
	if err := f.Close(); err != nil {
		return "", "", 0, fmt.Errorf("ingest: spool body: %w", err)
	}
	return f.Name(), "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// upload puts each window's file under a fresh key of the dataset's target
// and returns the partition files to commit.
func (s *Service) upload(ctx context.Context, ds catalog.Dataset, uploads *objects.Uploads, windows []engine.WindowFile) ([]catalog.PartitionFile, error) {
	files := make([]catalog.PartitionFile, len(windows))
	toPut := make([]objects.File, len(windows))
	for i, w := range windows {
		files[i] = w.PartitionFile
		files[i].Target = uploads.Target.Name
		files[i].Key = storage.PartitionKey(ds.Name, ds.Partition, w.WindowStart, storage.NewObjectID())
		toPut[i] = objects.File{Path: w.Path, Key: files[i].Key}
	}
	puts, err := uploads.Upload(ctx, toPut)
	if err != nil {
		return nil, err
	}
	for i, p := range puts {
		files[i].SizeBytes, files[i].Checksum = p.Size, p.Checksum
	}
	return files, nil
}
