package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// quickstartPath is the document this test follows.
const quickstartPath = "../../docs/quickstart.md"

// step is one "$ command" of the quickstart with the output it shows.
type step struct {
	command string
	want    []string
}

// TestQuickstart follows docs/quickstart.md as written, on another port and
// database, as its "another port or database" example says: it starts the
// server with the document's own scripts/run.sh command (the database does
// not exist yet: run.sh must create it), then runs every "$ " command of the
// document in order and compares what it prints with what the document
// shows ("..." matches anything; a line "..." any number of lines). The
// document's addresses are replaced by a free port and a fresh database name,
// nothing else: when the document drifts from the product, this test fails.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(quickstartPath)
	require.NoError(t, err)
	blocks := codeBlocks(string(doc))
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)

	pgURL := os.Getenv("TIMESTORE_TEST_DATABASE_URL")
	if pgURL == "" {
		pgURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	pg, err := url.Parse(pgURL)
	require.NoError(t, err)
	port := freePort(t)
	db := "timestore_test_quickstart_" + randomHex(t)
	dropDatabase(t, pgURL, db)
	substitute := strings.NewReplacer(
		"127.0.0.1:18080", "127.0.0.1:"+port, "127.0.0.1:8080", "127.0.0.1:"+port,
		"@127.0.0.1:5432/mine?", "@"+pg.Host+"/"+db+"?",
	).Replace

	// The server: the document's command for another port and database.
	var server string
	for _, b := range blocks {
		if len(b) > 0 && strings.HasPrefix(b[0], "TIMESTORE_LISTEN=") {
			server = joinContinued(b)
		}
	}
	require.Contains(t, server, "./scripts/run.sh", "docs/quickstart.md lost its another-port-and-database example")
	require.Contains(t, server, "/mine?", "docs/quickstart.md: the example's database is no longer \"mine\"")
	server = substitute(server)
	startServer(t, repo, server, port)

	// The client: every "$ " command, in order, in a directory of its own
	// where bin/ is the repository's.
	work := t.TempDir()
	require.NoError(t, os.Symlink(filepath.Join(repo, "bin"), filepath.Join(work, "bin")))
	var steps []step
	for _, b := range blocks {
		steps = append(steps, parseSteps(b)...)
	}
	require.GreaterOrEqual(t, len(steps), 8, "docs/quickstart.md: its commands were not found")
	prelude := ""
	sawServer := false
	for _, s := range steps {
		cmd := substitute(s.command)
		if strings.HasPrefix(cmd, "export ") {
			prelude += cmd + "\n"
			sawServer = sawServer || strings.Contains(cmd, "TIMESTORE_SERVER=http://127.0.0.1:"+port)
			continue
		}
		require.True(t, sawServer, "docs/quickstart.md runs %q before it says where the server is (export TIMESTORE_SERVER)", s.command)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		c := exec.CommandContext(ctx, "bash", "-c", prelude+cmd)
		c.Dir = work
		c.Env = clientEnv()
		out, _ := c.CombinedOutput()
		cancel()
		require.Truef(t, matchOutput(s.want, strings.Split(strings.TrimRight(string(out), "\n"), "\n")),
			"docs/quickstart.md: the command\n%s\nprints\n%s\nbut the document shows\n%s", s.command, out, strings.Join(s.want, "\n"))
	}
}

// codeBlocks returns the lines of each fenced code block of a markdown document.
func codeBlocks(doc string) [][]string {
	var blocks [][]string
	var cur []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			if in {
				blocks = append(blocks, cur)
			}
			in, cur = !in, nil
			continue
		}
		if in {
			cur = append(cur, line)
		}
	}
	return blocks
}

// joinContinued joins lines ending in a backslash.
func joinContinued(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		if cut, ok := strings.CutSuffix(l, "\\"); ok {
			b.WriteString(cut + " ")
			continue
		}
		b.WriteString(l)
		break
	}
	return b.String()
}

var heredoc = regexp.MustCompile(`<<-?'?"?([A-Za-z_]+)'?"?`)

// parseSteps splits a block of "$ " commands into commands (with their
// continuation lines and here-documents) and the output shown after each.
func parseSteps(block []string) []step {
	var steps []step
	for i := 0; i < len(block); {
		line := block[i]
		cmd, ok := strings.CutPrefix(line, "$ ")
		if !ok {
			if len(steps) > 0 {
				steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
			}
			i++
			continue
		}
		i++
		for strings.HasSuffix(cmd, "\\") && i < len(block) {
			cmd += "\n" + block[i]
			i++
		}
		if m := heredoc.FindStringSubmatch(cmd); m != nil {
			for i < len(block) {
				cmd += "\n" + block[i]
				i++
				if block[i-1] == m[1] {
					break
				}
			}
		}
		steps = append(steps, step{command: cmd})
	}
	return steps
}

// matchOutput compares printed lines with the lines a document shows:
// whitespace runs are equal whatever their length, "..." within a line
// matches anything, a line "..." any number of lines, and a duration
// ("41ms") any duration.
func matchOutput(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0 || (len(got) == 1 && got[0] == "")
	}
	if strings.TrimSpace(want[0]) == "..." {
		for k := 0; k <= len(got); k++ {
			if matchOutput(want[1:], got[k:]) {
				return true
			}
		}
		return false
	}
	if len(got) == 0 || !lineRegexp(want[0]).MatchString(strings.TrimSpace(got[0])) {
		return false
	}
	return matchOutput(want[1:], got[1:])
}

var (
	spaces   = regexp.MustCompile(`\s+`)
	duration = regexp.MustCompile(`[0-9.]+(ms|µs|s)\b`)
)

func lineRegexp(want string) *regexp.Regexp {
	parts := strings.Split(strings.TrimSpace(want), "...")
	for i, p := range parts {
		p = regexp.QuoteMeta(p)
		p = spaces.ReplaceAllString(p, `\s+`)
		p = duration.ReplaceAllString(p, `[0-9.]+(ms|µs|s)`)
		parts[i] = p
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// startServer runs the document's server command in its own process group
// and waits until it answers /readyz; it is stopped when the test ends.
func startServer(t *testing.T, repo, command, port string) {
	t.Helper()
	var log strings.Builder
	c := exec.Command("bash", "-c", command)
	c.Dir = repo
	// The data directory is the test's: a developer's ./data stays untouched.
	c.Env = append(clientEnv(), "TIMESTORE_DATA_DIR="+t.TempDir(), "TIMESTORE_LOG_FORMAT=text")
	c.Stdout, c.Stderr = &lockedWriter{b: &log}, &lockedWriter{b: &log}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, c.Start())
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	// run.sh builds the binary first: allow for a cold build.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("the quickstart's server command %q exited (%v):\n%s", command, err, logString(&log))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quickstart's server did not answer on port %s within 5 minutes:\n%s", port, logString(&log))
		}
	}
}

// clientEnv is this process's environment without timestore's settings, as
// a new user's shell would be.
func clientEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIMESTORE_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func randomHex(t *testing.T) string {
	b := make([]byte, 4)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// dropDatabase drops db, created by the quickstart's server, when the test ends.
func dropDatabase(t *testing.T, adminURL, db string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("drop database %s: %v", db, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %q WITH (FORCE)`, db)); err != nil {
			t.Errorf("drop database %s: %v", db, err)
		}
	})
}

var logMu sync.Mutex

// lockedWriter collects a child's output from two pipes at once.
type lockedWriter struct{ b *strings.Builder }

func (w *lockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return w.b.Write(p)
}

func logString(b *strings.Builder) string {
	logMu.Lock()
	defer logMu.Unlock()
	return b.String()
}
