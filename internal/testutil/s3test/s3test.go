// Package s3test runs a real S3-compatible server, versitygw with its posix
// backend, for tests of code that talks to S3 through gocloud.dev/blob.
//
// Every server uses the same fixed root credentials. gocloud reads
// credentials from the process environment, so tests call SetCredentialsEnv
// once, from TestMain, before any test runs in parallel:
//
//	func TestMain(m *testing.M) {
//		s3test.SetCredentialsEnv()
//		os.Exit(m.Run())
//	}
//
// and then, in a test:
//
//	srv := s3test.Start(t)
//	bucketURL := srv.NewBucket(t) // s3://BUCKET?endpoint=...
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Fixed credentials and region of every test server.
const (
	AccessKeyID     = "timestore-test"
	SecretAccessKey = "timestore-test-secret-key"
	Region          = "us-east-1"
)

// BinaryEnv names the environment variable that may point at the versitygw
// binary.
const BinaryEnv = "TIMESTORE_VERSITYGW"

// InstallCommand installs the versitygw version the tests are written for.
const InstallCommand = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// startTimeout bounds how long Start and Restart wait for the server to
// answer.
const startTimeout = 30 * time.Second

// SetCredentialsEnv points the AWS SDK, and so gocloud's s3blob, at the test
// servers' credentials by setting AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY in the process environment (and clearing variables
// that would select other credentials). Call it from TestMain: it changes
// the whole process, which t.Setenv cannot do for parallel tests.
func SetCredentialsEnv() {
	set := map[string]string{
		"AWS_ACCESS_KEY_ID":         AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":     SecretAccessKey,
		"AWS_REGION":                Region,
		"AWS_EC2_METADATA_DISABLED": "true",
	}
	for k, v := range set {
		if err := os.Setenv(k, v); err != nil {
			panic(fmt.Sprintf("s3test: set %s: %v", k, err))
		}
	}
	for _, k := range []string{"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
		_ = os.Unsetenv(k)
	}
}

// Binary finds the versitygw binary: $TIMESTORE_VERSITYGW, then versitygw on
// the PATH, then <user cache dir>/timestore/bin/versitygw (for root,
// /root/.cache/timestore/bin/versitygw), then $GOPATH/bin/versitygw.
func Binary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s=%s is not an executable file", BinaryEnv, p)
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var candidates []string
	if d, err := os.UserCacheDir(); err == nil {
		candidates = append(candidates, filepath.Join(d, "timestore", "bin", "versitygw"))
	}
	candidates = append(candidates, "/root/.cache/timestore/bin/versitygw")
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		candidates = append(candidates, filepath.Join(gp, "bin", "versitygw"))
	}
	for _, p := range candidates {
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw not found (looked at $%s, PATH, %s); install it with: %s",
		BinaryEnv, strings.Join(candidates, ", "), InstallCommand)
}

func isExecutable(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// Server is a running versitygw process serving the directory Dir.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:PORT.
	Endpoint string
	// Dir is the posix backend's root: one subdirectory per bucket.
	Dir string

	t        testing.TB // nil for the shared server
	bin      string
	addr     string
	startErr error // why the shared server is not running

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	logs   *logBuffer
}

// Start starts a versitygw server on a free 127.0.0.1 port over a fresh
// temporary directory and stops it when the test ends. It fails the test if
// versitygw is not installed or does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := launch(t, filepath.Join(t.TempDir(), "s3"))
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

var shared struct {
	once sync.Once
	srv  *Server
	dir  string
	err  error
}

// StartShared returns a server shared by the whole test binary, starting it
// on first use. Tests share it by taking a fresh bucket each (NewBucket);
// they must not Stop or Restart it. If it could not start, NewBucket fails
// the calling test with the reason. The server is killed when the test
// process exits; call StopShared from TestMain after m.Run to also remove
// its directory.
func StartShared() *Server {
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "timestore-s3test-")
		if err != nil {
			shared.err = err
			shared.srv = &Server{startErr: err}
			return
		}
		shared.dir = dir
		shared.srv, shared.err = launch(nil, dir)
		if shared.err != nil {
			shared.srv = &Server{startErr: shared.err}
		}
	})
	return shared.srv
}

// StopShared stops the shared server, if one was started, and removes its
// directory.
func StopShared() {
	if shared.srv != nil {
		shared.srv.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}

// launch starts a server over dir. t, if not nil, is the test that owns it.
func launch(t testing.TB, dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{t: t, bin: bin, Dir: dir}
	// Another process may take the port between our probe and versitygw's
	// bind; try a few ports.
	for attempt := 0; attempt < 3; attempt++ {
		var port int
		port, err = freePort()
		if err != nil {
			break
		}
		s.addr = fmt.Sprintf("127.0.0.1:%d", port)
		s.Endpoint = "http://" + s.addr
		if err = s.start(); err == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("start versitygw: %w", err)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs versitygw on s.addr and waits until it answers.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	logs := &logBuffer{}
	cmd := exec.Command(s.bin, "--port", s.addr, "--quiet", "posix", s.Dir)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY_ID="+AccessKeyID,
		"ROOT_SECRET_ACCESS_KEY="+SecretAccessKey,
	)
	cmd.Stdout = logs
	cmd.Stderr = logs
	setProcAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := waitReady(s.Endpoint, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; versitygw output:\n%s", err, logs.String())
	}
	s.cmd, s.exited, s.logs = cmd, exited, logs
	return nil
}

// waitReady polls endpoint until it answers any HTTP response, the process
// exits, or startTimeout passes.
func waitReady(endpoint string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(endpoint + "/")
		if err == nil {
			_ = resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("versitygw exited before answering")
		case <-deadline.C:
			return fmt.Errorf("versitygw did not answer at %s within %s: %v", endpoint, startTimeout, err)
		case <-tick.C:
		}
	}
}

// Stop kills the server, keeping its directory, so that tests can take S3
// away; Restart brings it back. Stop is safe to call on a stopped server.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Pause stops the server process (SIGSTOP): it keeps its port and its
// connections but answers nothing, as a hung S3 service does. Resume
// continues it. Both are no-ops on a stopped server.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart stops the server if it is running and starts it again on the same
// port and directory, so buckets and objects are kept. It fails the test if
// the server does not come back.
func (s *Server) Restart() {
	if s.t == nil {
		panic("s3test: Restart of the shared server")
	}
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("s3test: restart versitygw: %v", err)
	}
}

// Logs returns what the server has printed since it last started.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

// Client returns an S3 client for the server, with the root credentials.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
	})
}

// NewBucket creates a bucket with a fresh name and returns its gocloud URL
// (see URL).
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	if s.startErr != nil {
		t.Fatalf("s3test: shared server: %v", s.startErr)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("s3test: %v", err)
	}
	name := "ts-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", name, err)
	}
	return s.URL(name)
}

// URL returns the gocloud.dev s3blob URL of bucket on this server:
// s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1&use_path_style=true&disable_https=true.
// It carries no credentials; see SetCredentialsEnv.
func (s *Server) URL(bucket string) string {
	return fmt.Sprintf("s3://%s?endpoint=%s&region=%s&use_path_style=true&disable_https=true", bucket, s.Endpoint, Region)
}

// logBuffer collects process output, keeping the last logLimit bytes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const logLimit = 64 << 10

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.buf.Len() > logLimit {
		keep := append([]byte(nil), l.buf.Bytes()[l.buf.Len()-logLimit/2:]...)
		l.buf.Reset()
		l.buf.Write(keep)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
