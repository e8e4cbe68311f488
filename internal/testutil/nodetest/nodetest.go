// Package nodetest runs real `timestore serve` processes for tests that must
// kill, restart or multiply the server: crash-point tests (SIGKILL at a fault
// point, restart, recovery) and multi-node tests (several processes sharing
// one catalog database and one object store).
//
// The binary is built once per test binary from this module's cmd/timestore.
// Every process listens on a free 127.0.0.1 port, logs JSON to a buffer the
// test can read (and that is printed when the test fails), and dies with the
// test process (Pdeathsig).
package nodetest

import (
	"context"
	"errors"
	"fmt"
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

	"timestore/internal/testutil/logbuf"

	"timestore/internal/client"
)

// ReadyTimeout bounds how long Start and Restart wait for /readyz.
const ReadyTimeout = 60 * time.Second

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds cmd/timestore (once per test binary) and returns its path.
// The binary lives in a temporary directory removed by Cleanup, which a
// TestMain calls after m.Run.
func Binary() (string, error) {
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "timestore-nodetest-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "timestore")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/timestore")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/timestore: %w\n%s", err, out)
		}
	})
	return buildPath, buildErr
}

// Cleanup removes the built binary.
func Cleanup() {
	if buildPath != "" {
		_ = os.RemoveAll(filepath.Dir(buildPath))
	}
}

// Config describes one node.
type Config struct {
	// DatabaseURL is the catalog database. Required.
	DatabaseURL string
	// DataDir is the node's data directory (local target, cache, temp).
	// Nodes sharing a dataset's data must share an S3 target, not this.
	// Defaults to a fresh temporary directory.
	DataDir string
	// Env is extra environment, KEY=VALUE, e.g. TIMESTORE_TARGET_REMOTE or
	// TIMESTORE_FAULTPOINTS. The test process's environment (with the AWS
	// credentials s3test.SetCredentialsEnv set) is inherited. Keep
	// TIMESTORE_LOG_LEVEL at info or debug: readiness waits for the
	// "serving" log line.
	Env []string
}

// Node is one `timestore serve` process, restartable on the same port.
type Node struct {
	// URL is the node's base URL, http://127.0.0.1:PORT.
	URL string
	// Client talks to the node.
	Client *client.Client
	// Addr is the listen address.
	Addr string

	t   testing.TB
	cfg Config

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	state  *os.ProcessState
	logs   *syncBuffer // every run's output, appended
}

// Start starts a node and waits until it is ready. The node is killed when
// the test ends; its output is logged if the test failed.
func Start(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.DatabaseURL == "" {
		t.Fatal("nodetest: DatabaseURL is required")
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	n := &Node{t: t, cfg: cfg, logs: &syncBuffer{}}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("timestore %s output:\n%s", n.Addr, n.Logs())
		}
	})
	// Another process may bind the port between freePort and the node's
	// bind, seconds later: then try another port.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		n.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		n.URL = "http://" + n.Addr
		n.Client = client.New(n.URL, "")
		if err := n.start(nil); err != nil {
			t.Fatal(err)
		}
		err = n.WaitReady(ReadyTimeout)
		if err == nil {
			return n
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		n.mu.Lock()
		n.cmd = nil
		n.mu.Unlock()
	}
}

// errPortTaken is wrapped by WaitReady's error when the process could not
// bind its port.
var errPortTaken = errors.New("port taken by another process")

// startMarker begins the output of each run in the node's log.
const startMarker = "--- start "

// currentRun returns the output of the node's latest run.
func (n *Node) currentRun() string {
	logs := n.Logs()
	if i := strings.LastIndex(logs, startMarker); i >= 0 {
		return logs[i:]
	}
	return logs
}

// serving reports whether the latest run logged that it serves: it holds
// its port, so /readyz answers come from it and not from a process that
// took the port meanwhile.
func (n *Node) serving() bool {
	out := n.currentRun()
	return strings.Contains(out, `"msg":"serving"`) || strings.Contains(out, "msg=serving")
}

// StartNoWait starts the process with extra environment and returns without
// waiting for readiness (for a run expected to die at a fault point while
// it still starts).
func (n *Node) StartNoWait(extraEnv ...string) error { return n.start(extraEnv) }

func (n *Node) start(extraEnv []string) error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return errors.New("nodetest: node already running")
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(),
		"TIMESTORE_DATABASE_URL="+n.cfg.DatabaseURL,
		"TIMESTORE_LISTEN="+n.Addr,
		"TIMESTORE_DATA_DIR="+n.cfg.DataDir,
		"TIMESTORE_LOG_FORMAT=json",
		"TIMESTORE_LOG_LEVEL=info",
	)
	// Leave out fault points the test process itself might carry.
	env := cmd.Env[:0]
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "TIMESTORE_FAULTPOINTS=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(append(env, n.cfg.Env...), extraEnv...)
	fmt.Fprintf(n.logs, "%s%s %s\n", startMarker, n.Addr, strings.Join(extraEnv, " "))
	cmd.Stdout = n.logs
	cmd.Stderr = n.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.state = cmd, exited, nil
	go func() {
		_ = cmd.Wait()
		n.mu.Lock()
		n.state = cmd.ProcessState
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// WaitReady polls /readyz until the process has logged that it serves and
// /readyz answers 200, the process exits, or timeout passes.
func (n *Node) WaitReady(timeout time.Duration) error {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		var err error
		if n.serving() {
			var resp *http.Response
			resp, err = hc.Get(n.URL + "/readyz")
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-exited:
			if strings.Contains(n.currentRun(), "address already in use") {
				return fmt.Errorf("timestore %s: %w:\n%s", n.Addr, errPortTaken, n.currentRun())
			}
			return fmt.Errorf("timestore %s exited before it was ready:\n%s", n.Addr, n.Logs())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timestore %s not ready within %s (last error %v)", n.Addr, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// WaitExit waits up to timeout for the process to exit and reports whether
// it died of SIGKILL.
func (n *Node) WaitExit(timeout time.Duration) (killed bool, err error) {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return false, errors.New("nodetest: node not started")
	}
	select {
	case <-exited:
	case <-time.After(timeout):
		return false, fmt.Errorf("timestore %s still running after %s", n.Addr, timeout)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cmd = nil
	ws, ok := n.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, nil
}

// Kill sends SIGKILL and waits for the process to exit. Safe on a stopped node.
func (n *Node) Kill() { n.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (graceful shutdown) and waits for the process to exit.
func (n *Node) Stop() { n.signal(syscall.SIGTERM) }

func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	<-exited
	n.mu.Lock()
	n.cmd = nil
	n.mu.Unlock()
}

// Restart starts the (stopped) node again on the same port, data directory
// and database, with extraEnv added, and waits until it is ready.
func (n *Node) Restart(extraEnv ...string) {
	n.t.Helper()
	if n.Running() {
		n.Kill()
	}
	n.mu.Lock()
	n.cmd = nil
	n.mu.Unlock()
	if err := n.start(extraEnv); err != nil {
		n.t.Fatal(err)
	}
	if err := n.WaitReady(ReadyTimeout); err != nil {
		n.t.Fatal(err)
	}
}

// DataDir returns the node's data directory (kept across restarts).
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Logs returns everything the node printed, across restarts.
func (n *Node) Logs() string { return n.logs.String() }

// WaitLog polls the node's output until it contains substr or timeout passes.
func (n *Node) WaitLog(ctx context.Context, substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(n.Logs(), substr) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timestore %s: %q not logged within %s", n.Addr, substr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	return nil
}

// usedPorts are the ports given to nodes of this test binary. A node keeps
// its port across restarts, so while it is down its port looks free: without
// this, another node could be given it and the two would answer each other's
// requests.
var usedPorts struct {
	mu    sync.Mutex
	ports map[int]bool
}

func freePort() (int, error) {
	usedPorts.mu.Lock()
	defer usedPorts.mu.Unlock()
	if usedPorts.ports == nil {
		usedPorts.ports = map[int]bool{}
	}
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !usedPorts.ports[port] {
			usedPorts.ports[port] = true
			return port, nil
		}
	}
}

// syncBuffer collects output written concurrently.
type syncBuffer = logbuf.Buffer
