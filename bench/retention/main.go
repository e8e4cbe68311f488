// Command retention measures retention on a dataset of 10,000 partitions,
// on the local target and on S3 (a versitygw started for the run):
//
//   - evaluate: the pure policy evaluation (retention.Evaluate) over the
//     live manifest, and the whole dry run (Service.Plan: the catalog read
//     of the manifest and holds, plus the evaluation);
//   - apply: Service.Apply, one manifest transaction that marks 9,000
//     partitions removed with one audit row each;
//   - sweep: Service.Sweep with a grace of 0 (no lease held): the purge
//     transactions (batches of 1,000) and the deletion of the 9,000 objects,
//     reported as objects per second.
//
// Each run builds a fresh dataset: it ingests one tiny CSV to get a real
// Parquet file, uploads 10,000 copies of it under distinct keys (the sweep
// deletes real objects), and registers them with catalog commits of 1,000
// partitions, one hour window each. None of that is timed. The machine may
// be shared with other work: run it a few times and read the medians.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"timestore/bench/internal/benchenv"
	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/policy"
	"timestore/internal/retention"
	"timestore/internal/storage"
	"timestore/internal/testutil/s3test"
)

func main() {
	n := flag.Int("partitions", 10_000, "partitions in the dataset")
	removeFrac := flag.Float64("remove", 0.9, "fraction of the partitions the policy removes")
	runs := flag.Int("runs", 3, "runs per target; medians are reported")
	noS3 := flag.Bool("no-s3", false, "skip the S3 target")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "timestore-bench-retention-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	targets := map[string]string{}
	if !*noS3 {
		s3test.SetCredentialsEnv()
		srv := s3test.StartShared()
		defer s3test.StopShared()
		if srv.Endpoint == "" {
			log.Fatalf("start versitygw (install it with %s, or pass -no-s3)", s3test.InstallCommand)
		}
		bucket := fmt.Sprintf("bench-retention-%d", time.Now().UnixNano())
		if _, err := srv.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			log.Fatal(err)
		}
		targets["remote"] = srv.URL(bucket)
	}
	env, err := benchenv.Start(ctx, filepath.Join(dir, "data"), targets)
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close(ctx)

	var mu sync.Mutex
	clockAt := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clockAt }
	setClock := func(t time.Time) { mu.Lock(); defer mu.Unlock(); clockAt = t }
	svc, err := retention.New(retention.Options{Store: env.Server.Store, Targets: env.Server.Targets, Now: now})
	if err != nil {
		log.Fatal(err)
	}

	fmt.Printf("machine: %s\n", benchenv.Machine())
	fmt.Printf("dataset: %d partitions (hour windows), the policy removes %.0f%% of them; %d runs per target; grace 0, no lease held\n\n",
		*n, *removeFrac*100, *runs)
	fmt.Println("| target | evaluate (pure) ms | dry run (read + evaluate) ms | apply s | sweep s | purge phase s | delete phase s | sweep objects/s |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	names := []string{storage.LocalTargetName}
	if !*noS3 {
		names = append(names, "remote")
	}
	for _, target := range names {
		var eval, plan, apply, sweep, purge, del []time.Duration
		var rate []float64
		for run := range *runs {
			name := fmt.Sprintf("bench_%s_%d", target, run)
			base := time.Date(2019, 12, 31, 0, 0, 0, 0, time.UTC)
			removed := int(float64(*n) * *removeFrac)
			evalNow := base.Add(time.Duration(*n)*time.Hour + 24*time.Hour)
			// Partition i covers [base+i h, base+(i+1) h); the cutoff falls
			// between the removed ones and the others.
			maxAge := policy.Duration(evalNow.Sub(base.Add(time.Duration(removed) * time.Hour)))
			zero := policy.Duration(0)
			pol, err := json.Marshal(policy.Policy{Retention: &policy.Retention{MaxAge: maxAge, Grace: &zero}})
			if err != nil {
				log.Fatal(err)
			}
			if _, err := env.Client.CreateDataset(ctx, client.CreateDataset{
				Name: name, Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "v", Type: "double"}},
				TimeColumn: "ts", Partition: "hour", Target: target, Policy: pol,
			}); err != nil {
				log.Fatal(err)
			}
			if err := populate(ctx, env, name, target, base, *n); err != nil {
				log.Fatal(err)
			}

			snap, holds, err := env.Server.Store.RetentionSnapshot(ctx, name)
			if err != nil {
				log.Fatal(err)
			}
			var evals []time.Duration
			for range 5 {
				start := time.Now()
				p := retention.Evaluate(snap.Partitions, snap.Dataset.Policy.Retention, holds, nil, evalNow)
				evals = append(evals, time.Since(start))
				if len(p.Selected) != removed {
					log.Fatalf("evaluate selected %d partitions, want %d", len(p.Selected), removed)
				}
			}
			eval = append(eval, median(evals))

			setClock(evalNow)
			start := time.Now()
			if _, err := svc.Plan(ctx, name); err != nil {
				log.Fatal(err)
			}
			plan = append(plan, time.Since(start))

			start = time.Now()
			res, err := svc.Apply(ctx, name, retention.RunOptions{Actor: "bench"})
			if err != nil {
				log.Fatal(err)
			}
			apply = append(apply, time.Since(start))
			if int(res.Removed.Partitions) != removed {
				log.Fatalf("apply removed %d partitions, want %d", res.Removed.Partitions, removed)
			}

			setClock(time.Now().Add(time.Minute))
			start = time.Now()
			sw, err := svc.Sweep(ctx, name, retention.RunOptions{Actor: "bench"})
			if err != nil {
				log.Fatal(err)
			}
			d := time.Since(start)
			sweep = append(sweep, d)
			if sw.Purged != removed || sw.ObjectsDeleted != removed || len(sw.Datasets) != 1 {
				log.Fatalf("sweep purged %d and deleted %d objects in %d datasets, want %d in 1", sw.Purged, sw.ObjectsDeleted, len(sw.Datasets), removed)
			}
			for _, ds := range sw.Datasets {
				if ds.Name == name {
					purge = append(purge, time.Duration(ds.PurgeSeconds*float64(time.Second)))
					del = append(del, time.Duration(ds.DeleteSeconds*float64(time.Second)))
				}
			}
			rate = append(rate, float64(sw.ObjectsDeleted)/d.Seconds())
			left, err := count(ctx, env, target, name)
			if err != nil {
				log.Fatal(err)
			}
			if left != *n-removed {
				log.Fatalf("%d objects left on the target, want %d", left, *n-removed)
			}
		}
		slices.Sort(rate)
		fmt.Printf("| %s | %.1f | %.1f | %.3f | %.3f | %.3f | %.3f | %.0f |\n", target,
			ms(median(eval)), ms(median(plan)), median(apply).Seconds(), median(sweep).Seconds(),
			median(purge).Seconds(), median(del).Seconds(), rate[len(rate)/2])
	}
}

// populate ingests one row at base to get a real Parquet file (partition
// 0), uploads n-1 copies of it under distinct keys and registers them as
// partitions 1 to n-1 of one hour each, in commits of 1,000.
func populate(ctx context.Context, env *benchenv.Env, name, targetName string, base time.Time, n int) error {
	row := fmt.Sprintf("ts,v\n%s,1\n", base.Add(30*time.Minute).Format(time.RFC3339))
	if _, err := env.Client.Ingest(ctx, name, "csv", strings.NewReader(row), ""); err != nil {
		return err
	}
	parts, err := env.Server.Store.Partitions(ctx, name, catalog.StateLive)
	if err != nil {
		return err
	}
	target, err := env.Server.Targets.Get(targetName)
	if err != nil {
		return err
	}
	rc, err := target.Bucket.NewReader(ctx, parts[0].Key)
	if err != nil {
		return err
	}
	payload, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return err
	}
	files := make([]catalog.PartitionFile, n-1)
	for i := range files {
		ws := base.Add(time.Duration(i+1) * time.Hour)
		files[i] = catalog.PartitionFile{
			WindowStart: ws, TimeMin: ws.Add(time.Minute), TimeMax: ws.Add(59 * time.Minute),
			RowCount: 1, SizeBytes: int64(len(payload)), Target: targetName,
			Key:      storage.PartitionKey(name, "hour", ws, storage.NewObjectID()),
			Checksum: parts[0].Checksum, Stats: parts[0].Stats,
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, f := range files {
		g.Go(func() error { return target.Bucket.Upload(gctx, f.Key, bytes.NewReader(payload)) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i := 0; i < len(files); i += 1000 {
		if _, err := env.Server.Store.Commit(ctx, catalog.Change{
			Dataset: name, Operation: catalog.OpIngest, Actor: "bench", Add: files[i:min(i+1000, len(files))],
		}); err != nil {
			return err
		}
	}
	return nil
}

// count counts the objects of a dataset on a target.
func count(ctx context.Context, env *benchenv.Env, targetName, name string) (int, error) {
	target, err := env.Server.Targets.Get(targetName)
	if err != nil {
		return 0, err
	}
	n := 0
	err = target.List(ctx, name+"/", func(storage.ObjectInfo) error { n++; return nil })
	return n, err
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
