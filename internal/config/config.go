// Package config loads timestore's server configuration from an optional YAML
// file, then environment variables, then command-line flags (each overriding
// the one before), and renders it with secrets redacted.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults.
const (
	// ListenDefault is the HTTP listen address.
	ListenDefault = "127.0.0.1:8080"
	// DataDirDefault holds the local target, the read cache and temp files.
	DataDirDefault = "./data"
	// MaxBodyBytesDefault bounds an ingest request body: 256 MiB.
	MaxBodyBytesDefault int64 = 256 << 20
	// QueryTimeoutDefault bounds one query.
	QueryTimeoutDefault = 60 * time.Second
	// QueryConcurrencyDefault is how many queries run at once; more wait.
	QueryConcurrencyDefault = 4
	// QuerySpillLimitDefault bounds the disk one query may spill to.
	QuerySpillLimitDefault = "4GiB"
	// ReadHeaderTimeoutDefault bounds reading a request's headers.
	ReadHeaderTimeoutDefault = 10 * time.Second
	// ReadTimeoutDefault bounds reading a whole request, headers and body.
	ReadTimeoutDefault = 10 * time.Minute
	// CacheMaxBytesDefault bounds the local read cache of remote partitions: 10 GiB.
	CacheMaxBytesDefault int64 = 10 << 30
	// StorageTimeoutDefault bounds how long a storage call waits for its
	// target to answer (see storage.NewDeadlineBucket).
	StorageTimeoutDefault = 30 * time.Second
	// NativeIngestMaxBytesDefault is the largest ingest body read in Go
	// rather than by DuckDB: 1 MiB.
	NativeIngestMaxBytesDefault int64 = 1 << 20
	// LogFormatDefault is "json"; "text" is the other choice.
	LogFormatDefault = "json"
	// LogLevelDefault is "info".
	LogLevelDefault = "info"
)

// Config is the server's configuration. Field comments name the environment
// variable and YAML key of each field.
type Config struct {
	// DatabaseURL is the catalog database (TIMESTORE_DATABASE_URL, database_url). Required.
	DatabaseURL string `yaml:"database_url"`
	// Listen is the HTTP listen address (TIMESTORE_LISTEN, listen). Defaults to ListenDefault.
	Listen string `yaml:"listen"`
	// DataDir holds the local target, the read cache and temp files (TIMESTORE_DATA_DIR, data_dir).
	// Defaults to DataDirDefault.
	DataDir string `yaml:"data_dir"`
	// Targets maps extra storage target names to URLs (TIMESTORE_TARGET_<NAME>, targets).
	Targets map[string]string `yaml:"targets"`
	// AdminToken is the bearer token for /admin/* (TIMESTORE_ADMIN_TOKEN, admin_token).
	// Unset: admin routes are served only when listening on loopback.
	AdminToken string `yaml:"admin_token"`
	// Token is the bearer token for /v1/* (TIMESTORE_TOKEN, token). Unset: open.
	Token string `yaml:"token"`
	// MaxBodyBytes bounds an ingest body (TIMESTORE_MAX_BODY_BYTES, max_body_bytes).
	// Defaults to MaxBodyBytesDefault.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// QueryTimeout bounds one query (TIMESTORE_QUERY_TIMEOUT, query_timeout). Defaults to QueryTimeoutDefault.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// QueryConcurrency is how many queries this process runs at once; more
	// wait for a slot within their timeout (TIMESTORE_QUERY_CONCURRENCY,
	// query_concurrency). Each may use duckdb_memory_limit. Defaults to
	// QueryConcurrencyDefault.
	QueryConcurrency int `yaml:"query_concurrency"`
	// QuerySpillLimit bounds the disk one query may spill to, in DuckDB's
	// syntax (TIMESTORE_QUERY_SPILL_LIMIT, query_spill_limit). Defaults to
	// QuerySpillLimitDefault.
	QuerySpillLimit string `yaml:"query_spill_limit"`
	// ReadHeaderTimeout bounds reading a request's headers (TIMESTORE_READ_HEADER_TIMEOUT,
	// read_header_timeout). Defaults to ReadHeaderTimeoutDefault.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, headers and body, so that a
	// client sending its body too slowly is cut off (TIMESTORE_READ_TIMEOUT,
	// read_timeout). Defaults to ReadTimeoutDefault.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// CacheMaxBytes bounds the read cache of remote partitions (TIMESTORE_CACHE_MAX_BYTES, cache_max_bytes).
	// Defaults to CacheMaxBytesDefault.
	CacheMaxBytes int64 `yaml:"cache_max_bytes"`
	// StorageTimeout is how long a storage call may wait for its target to
	// answer without progress before it fails; a transfer that keeps moving
	// is never cut (TIMESTORE_STORAGE_TIMEOUT, storage_timeout). Defaults to
	// StorageTimeoutDefault.
	StorageTimeout time.Duration `yaml:"storage_timeout"`
	// DuckDBMemoryLimit is DuckDB's memory_limit, e.g. "4GB" (TIMESTORE_DUCKDB_MEMORY_LIMIT,
	// duckdb_memory_limit). Empty: DuckDB's default (80% of RAM).
	DuckDBMemoryLimit string `yaml:"duckdb_memory_limit"`
	// DuckDBThreads is DuckDB's thread count (TIMESTORE_DUCKDB_THREADS, duckdb_threads). 0: one per core.
	DuckDBThreads int `yaml:"duckdb_threads"`
	// NativeIngestMaxBytes is the size up to which an ingest body is read
	// in Go instead of DuckDB, without DuckDB's fixed cost per request; a
	// body the Go reader does not read with certainty still goes to DuckDB
	// (TIMESTORE_NATIVE_INGEST_MAX_BYTES, native_ingest_max_bytes). 0 sends
	// every body to DuckDB. Defaults to NativeIngestMaxBytesDefault.
	NativeIngestMaxBytes int64 `yaml:"native_ingest_max_bytes"`
	// LogFormat is "json" or "text" (TIMESTORE_LOG_FORMAT, log_format). Defaults to LogFormatDefault.
	LogFormat string `yaml:"log_format"`
	// LogLevel is debug, info, warn or error (TIMESTORE_LOG_LEVEL, log_level). Defaults to LogLevelDefault.
	LogLevel string `yaml:"log_level"`
	// Jobs tunes the lifecycle job runner (TIMESTORE_JOBS_*, jobs). Zero
	// fields take the job service's defaults.
	Jobs JobsConfig `yaml:"jobs"`
}

// JobsConfig tunes the lifecycle job runner. Zero values take the defaults
// documented in docs/configuration.md.
type JobsConfig struct {
	// Workers: false makes this process insert and inspect jobs but run none
	// (TIMESTORE_JOBS_WORKERS, jobs.workers). Defaults to true.
	Workers *bool `yaml:"workers,omitempty"`
	// MaxWorkers is how many lifecycle jobs this process runs at once
	// (TIMESTORE_JOBS_MAX_WORKERS, jobs.max_workers).
	MaxWorkers int `yaml:"max_workers,omitempty"`
	// MaxAttempts is how often a job is tried before it is discarded
	// (TIMESTORE_JOBS_MAX_ATTEMPTS, jobs.max_attempts).
	MaxAttempts int `yaml:"max_attempts,omitempty"`
	// JobTimeout bounds one attempt (TIMESTORE_JOBS_JOB_TIMEOUT, jobs.job_timeout).
	JobTimeout time.Duration `yaml:"job_timeout,omitempty"`
	// RescueAfter is how long a job may stay running before it is considered
	// abandoned by a dead process and retried; longer than JobTimeout
	// (TIMESTORE_JOBS_RESCUE_AFTER, jobs.rescue_after).
	RescueAfter time.Duration `yaml:"rescue_after,omitempty"`
	// SchedulerInterval is how often due schedules are checked
	// (TIMESTORE_JOBS_SCHEDULER_INTERVAL, jobs.scheduler_interval).
	SchedulerInterval time.Duration `yaml:"scheduler_interval,omitempty"`
	// ReconcileSchedule is the reconcile schedule of every dataset, or "off"
	// (TIMESTORE_JOBS_RECONCILE_SCHEDULE, jobs.reconcile_schedule).
	ReconcileSchedule string `yaml:"reconcile_schedule,omitempty"`
	// ReconcileSafetyAge is how old an unreferenced object must be before
	// reconcile deletes it; it must exceed the longest ingest or job attempt
	// (TIMESTORE_JOBS_RECONCILE_SAFETY_AGE, jobs.reconcile_safety_age).
	ReconcileSafetyAge time.Duration `yaml:"reconcile_safety_age,omitempty"`
}

// Default returns a Config with every default applied.
func Default() Config {
	return Config{
		Listen:               ListenDefault,
		DataDir:              DataDirDefault,
		Targets:              map[string]string{},
		MaxBodyBytes:         MaxBodyBytesDefault,
		QueryTimeout:         QueryTimeoutDefault,
		QueryConcurrency:     QueryConcurrencyDefault,
		QuerySpillLimit:      QuerySpillLimitDefault,
		ReadHeaderTimeout:    ReadHeaderTimeoutDefault,
		ReadTimeout:          ReadTimeoutDefault,
		CacheMaxBytes:        CacheMaxBytesDefault,
		StorageTimeout:       StorageTimeoutDefault,
		NativeIngestMaxBytes: NativeIngestMaxBytesDefault,
		LogFormat:            LogFormatDefault,
		LogLevel:             LogLevelDefault,
	}
}

// Load reads the YAML file at path (skipped when path is "" or, for the
// default name, absent) over the defaults, then applies environ.
func Load(path string, environ []string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist) && filepath.Base(path) == "timestore.yaml":
		case err != nil:
			return c, fmt.Errorf("read config: %w", err)
		default:
			dec := yaml.NewDecoder(bytes.NewReader(b))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
				return c, fmt.Errorf("config file %s: %w", path, err)
			}
		}
	}
	if err := c.applyEnv(environ); err != nil {
		return c, err
	}
	if c.Targets == nil {
		c.Targets = map[string]string{}
	}
	return c, nil
}

func (c *Config) applyEnv(environ []string) error {
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "TIMESTORE_") {
			continue
		}
		var err error
		switch k {
		case "TIMESTORE_DATABASE_URL":
			c.DatabaseURL = v
		case "TIMESTORE_LISTEN":
			c.Listen = v
		case "TIMESTORE_DATA_DIR":
			c.DataDir = v
		case "TIMESTORE_ADMIN_TOKEN":
			c.AdminToken = v
		case "TIMESTORE_TOKEN":
			c.Token = v
		case "TIMESTORE_MAX_BODY_BYTES":
			c.MaxBodyBytes, err = strconv.ParseInt(v, 10, 64)
		case "TIMESTORE_QUERY_TIMEOUT":
			c.QueryTimeout, err = time.ParseDuration(v)
		case "TIMESTORE_QUERY_CONCURRENCY":
			c.QueryConcurrency, err = strconv.Atoi(v)
		case "TIMESTORE_QUERY_SPILL_LIMIT":
			c.QuerySpillLimit = v
		case "TIMESTORE_READ_HEADER_TIMEOUT":
			c.ReadHeaderTimeout, err = time.ParseDuration(v)
		case "TIMESTORE_READ_TIMEOUT":
			c.ReadTimeout, err = time.ParseDuration(v)
		case "TIMESTORE_CACHE_MAX_BYTES":
			c.CacheMaxBytes, err = strconv.ParseInt(v, 10, 64)
		case "TIMESTORE_STORAGE_TIMEOUT":
			c.StorageTimeout, err = time.ParseDuration(v)
		case "TIMESTORE_DUCKDB_MEMORY_LIMIT":
			c.DuckDBMemoryLimit = v
		case "TIMESTORE_NATIVE_INGEST_MAX_BYTES":
			c.NativeIngestMaxBytes, err = strconv.ParseInt(v, 10, 64)
		case "TIMESTORE_DUCKDB_THREADS":
			c.DuckDBThreads, err = strconv.Atoi(v)
		case "TIMESTORE_LOG_FORMAT":
			c.LogFormat = v
		case "TIMESTORE_LOG_LEVEL":
			c.LogLevel = v
		case "TIMESTORE_JOBS_WORKERS":
			var b bool
			b, err = strconv.ParseBool(v)
			c.Jobs.Workers = &b
		case "TIMESTORE_JOBS_MAX_WORKERS":
			c.Jobs.MaxWorkers, err = strconv.Atoi(v)
		case "TIMESTORE_JOBS_MAX_ATTEMPTS":
			c.Jobs.MaxAttempts, err = strconv.Atoi(v)
		case "TIMESTORE_JOBS_JOB_TIMEOUT":
			c.Jobs.JobTimeout, err = time.ParseDuration(v)
		case "TIMESTORE_JOBS_RESCUE_AFTER":
			c.Jobs.RescueAfter, err = time.ParseDuration(v)
		case "TIMESTORE_JOBS_SCHEDULER_INTERVAL":
			c.Jobs.SchedulerInterval, err = time.ParseDuration(v)
		case "TIMESTORE_JOBS_RECONCILE_SCHEDULE":
			c.Jobs.ReconcileSchedule = v
		case "TIMESTORE_JOBS_RECONCILE_SAFETY_AGE":
			c.Jobs.ReconcileSafetyAge, err = time.ParseDuration(v)
		default:
			if name, ok := strings.CutPrefix(k, "TIMESTORE_TARGET_"); ok && name != "" {
				if c.Targets == nil {
					c.Targets = map[string]string{}
				}
				c.Targets[strings.ToLower(name)] = v
			}
		}
		if err != nil {
			return fmt.Errorf("environment %s=%q: %s", k, v, envHint(err))
		}
	}
	return nil
}

// envHint says what an environment value should have looked like: Go's
// parse errors name the parser ("time: invalid duration"), not the form.
func envHint(err error) string {
	var num *strconv.NumError
	switch {
	case errors.As(err, &num) && num.Func == "ParseBool":
		return "want true or false"
	case errors.As(err, &num) && errors.Is(num.Err, strconv.ErrRange):
		return "out of range"
	case errors.As(err, &num):
		return "want a whole number"
	case strings.HasPrefix(err.Error(), "time: "):
		return "want a duration such as 30s, 5m or 1h (units: ms, s, m, h)"
	}
	return err.Error()
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if c.DatabaseURL == "" {
		return errors.New("database URL is required: set TIMESTORE_DATABASE_URL or --database-url")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen address %q: %w", c.Listen, err)
	}
	if c.MaxBodyBytes <= 0 {
		return errors.New("max_body_bytes (TIMESTORE_MAX_BODY_BYTES) must be positive")
	}
	if c.NativeIngestMaxBytes < 0 {
		return errors.New("native_ingest_max_bytes (TIMESTORE_NATIVE_INGEST_MAX_BYTES) must be 0 (off) or a positive size in bytes")
	}
	if c.QueryTimeout <= 0 {
		return errors.New("query_timeout (TIMESTORE_QUERY_TIMEOUT) must be a positive duration such as 30s")
	}
	if c.QueryConcurrency <= 0 {
		return errors.New("query_concurrency (TIMESTORE_QUERY_CONCURRENCY) must be positive")
	}
	if c.QuerySpillLimit == "" || strings.ContainsAny(c.QuerySpillLimit, "'\"\n") {
		return fmt.Errorf("query_spill_limit (TIMESTORE_QUERY_SPILL_LIMIT) %q: want a size such as 4GiB", c.QuerySpillLimit)
	}
	if c.ReadHeaderTimeout <= 0 || c.ReadTimeout <= 0 {
		return errors.New("read_header_timeout and read_timeout (TIMESTORE_READ_HEADER_TIMEOUT, TIMESTORE_READ_TIMEOUT) must be positive durations such as 10s")
	}
	if c.StorageTimeout <= 0 {
		return fmt.Errorf("storage_timeout (TIMESTORE_STORAGE_TIMEOUT) %s: want a positive duration such as 30s", c.StorageTimeout)
	}
	if c.Token != "" && c.Token == c.AdminToken {
		return errors.New("the data-plane token and the admin token must differ: the data-plane token must not grant admin access")
	}
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return fmt.Errorf("log format %q: want json or text", c.LogFormat)
	}
	if _, ok := c.Targets["local"]; ok {
		return errors.New("target \"local\" is built in (DATA_DIR/objects) and cannot be redefined")
	}
	return nil
}

// ListensOnLoopback reports whether Listen binds only a loopback address.
func (c Config) ListensOnLoopback() bool {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

const redacted = "REDACTED"

// Redacted returns a copy with tokens and URL credentials replaced, safe to log or print.
func (c Config) Redacted() Config {
	r := c
	if r.AdminToken != "" {
		r.AdminToken = redacted
	}
	if r.Token != "" {
		r.Token = redacted
	}
	r.DatabaseURL = RedactURL(c.DatabaseURL)
	r.Targets = make(map[string]string, len(c.Targets))
	for k, v := range c.Targets {
		r.Targets[k] = RedactURL(v)
	}
	return r
}

// secretWords mark a query parameter or connection-string keyword whose
// value is secret: any whose lower-cased name contains one of them.
var secretWords = []string{"password", "passwd", "secret", "token", "key", "signature", "credential", "auth", "session"}

func isSecretName(name string) bool {
	n := strings.ToLower(name)
	for _, s := range secretWords {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// dsnPair is one keyword=value pair of a libpq-style connection string; a
// quoted value may hold spaces and backslash escapes, and an unterminated
// one runs to the end.
var dsnPair = regexp.MustCompile(`([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*(?:'|\\?$)|\S*)`)

// RedactURL hides a URL's password and any query parameter whose name
// suggests a secret. A keyword=value connection string ("host=db
// password=..."), which the catalog accepts too, has its secret values hidden.
func RedactURL(raw string) string {
	if raw == "" {
		return raw
	}
	if !strings.Contains(raw, "://") && strings.Contains(raw, "=") {
		return dsnPair.ReplaceAllStringFunc(raw, func(pair string) string {
			if m := dsnPair.FindStringSubmatch(pair); isSecretName(m[1]) {
				return m[1] + "=" + redacted
			}
			return pair
		})
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redacted
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
	}
	q := u.Query()
	changed := false
	for name := range q {
		if isSecretName(name) {
			q.Set(name, redacted)
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// YAML renders the redacted configuration as YAML.
func (c Config) YAML() string {
	b, _ := yaml.Marshal(c.Redacted())
	return string(b)
}
