package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"timestore/internal/testutil/logbuf"

	"github.com/stretchr/testify/require"

	"timestore/internal/cli"
	"timestore/internal/client"
	"timestore/internal/config"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
	"timestore/internal/testutil/testserver"
)

// syncBuffer collects output written concurrently.
type syncBuffer = logbuf.Buffer

// answer is one HTTP answer: status and body.
type answer struct {
	status int
	body   string
}

func (a answer) code(t *testing.T) string {
	t.Helper()
	var eb struct{ Error client.Error }
	require.NoError(t, json.Unmarshal([]byte(a.body), &eb), "not an error body: %s", a.body)
	return eb.Error.Code
}

// noRedirect answers redirects instead of following them.
var noRedirect = &http.Client{
	Timeout:       60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// send makes one request; auth is the whole Authorization header ("" for none).
func send(t *testing.T, method, url, auth, ctype string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := noRedirect.Do(req)
	require.NoError(t, err, "%s %s", method, url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, string(b)}
}

func bearerAuth(tok string) string { return "Bearer " + tok }

// adminRoutes are every /admin route, with a body where one is needed.
var adminRoutes = []struct{ method, path, body string }{
	{"POST", "/admin/v1/maintenance", `{"kind":"compaction","dataset":"cpu"}`},
	{"GET", "/admin/v1/jobs", ""},
	{"GET", "/admin/v1/jobs/1", ""},
	{"POST", "/admin/v1/jobs/1/retry", ""},
	{"POST", "/admin/v1/jobs/1/cancel", ""},
	{"GET", "/admin/v1/datasets/cpu/lifecycle", ""},
	{"GET", "/admin/v1/audit", ""},
	{"POST", "/admin/v1/datasets/cpu/holds", `{"from":"2024-01-01","to":"2024-02-01","reason":"x"}`},
	{"GET", "/admin/v1/holds", ""},
	{"DELETE", "/admin/v1/holds/1", ""},
	{"POST", "/admin/v1/datasets/cpu/partitions/restore", `{"partition_ids":[1]}`},
	{"POST", "/admin/v1/datasets/cpu/partitions/no-compact", `{"partition_ids":[1],"no_compact":true}`},
	{"GET", "/admin/ui/", ""},
	{"GET", "/admin/ui/api/jobs?state=running", ""},
	{"GET", "/admin/nope", ""},
}

// TestSecurityTokenNearMisses: only the exact tokens are accepted; the
// data-plane token reaches no admin route, and a refused request changes
// nothing and never echoes a token.
func TestSecurityTokenNearMisses(t *testing.T) {
	t.Parallel()
	const dataTok, adminTok = "data-9f2c41e07b3d4a58", "admin-5e8d17c2a09b4f63"
	b := testserver.Start(t, testserver.Options{NoWorkers: true, Configure: func(c *config.Config) {
		c.Token, c.AdminToken, c.Listen = dataTok, adminTok, "0.0.0.0:8080"
	}})
	u := b.HTTP.URL
	noSecrets := func(a answer, what string) {
		t.Helper()
		require.NotContains(t, a.body, dataTok, what)
		require.NotContains(t, a.body, adminTok, what)
	}
	create := `{"name":"cpu","columns":[{"name":"ts","type":"timestamp"},{"name":"v","type":"double"}],"time_column":"ts"}`
	require.Equal(t, 201, send(t, "POST", u+"/v1/datasets", bearerAuth(dataTok), "application/json", strings.NewReader(create)).status)

	flip := func(s string) string {
		last := s[len(s)-1]
		if last == '0' {
			return s[:len(s)-1] + "1"
		}
		return s[:len(s)-1] + "0"
	}
	for _, tok := range []string{dataTok, adminTok} {
		misses := map[string]string{
			"one byte short":     bearerAuth(tok[:len(tok)-1]),
			"one byte longer":    bearerAuth(tok + "0"),
			"last byte changed":  bearerAuth(flip(tok)),
			"first byte changed": bearerAuth("X" + tok[1:]),
			"upper case":         bearerAuth(strings.ToUpper(tok)),
			"extra space":        "Bearer  " + tok,
			"no scheme":          tok,
			"basic, wrong pass":  "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+flip(tok))),
			"basic, token user":  "Basic " + base64.StdEncoding.EncodeToString([]byte(tok+":")),
			"empty bearer":       "Bearer ",
			"both tokens":        bearerAuth(dataTok + adminTok),
			"base64 of token":    bearerAuth(base64.StdEncoding.EncodeToString([]byte(tok))),
		}
		for name, auth := range misses {
			for _, path := range []string{"/v1/datasets", "/admin/v1/audit", "/admin/ui/"} {
				a := send(t, "GET", u+path, auth, "", nil)
				require.Equal(t, 401, a.status, "%s token %s on %s: %s", tok[:4], name, path, a.body)
				noSecrets(a, name)
			}
		}
	}
	// The scheme name is case-insensitive (RFC 9110); the token is not.
	for _, scheme := range []string{"bearer", "BEARER", "bEaReR"} {
		a := send(t, "GET", u+"/v1/datasets", scheme+" "+dataTok, "", nil)
		require.Equal(t, 200, a.status, scheme)
		a = send(t, "GET", u+"/admin/v1/audit", scheme+" "+adminTok, "", nil)
		require.Equal(t, 200, a.status, scheme)
	}
	// A token anywhere but the Authorization header is no token.
	for _, q := range []string{"?token=", "?access_token=", "?auth="} {
		a := send(t, "GET", u+"/v1/datasets"+q+dataTok, "", "", nil)
		require.Equal(t, 401, a.status, q)
		a = send(t, "GET", u+"/admin/v1/audit"+q+adminTok, "", "", nil)
		require.Equal(t, 401, a.status, q)
	}

	// The data-plane token is refused on every admin route, mutating ones
	// included, and they do nothing.
	for _, r := range adminRoutes {
		var body io.Reader
		ctype := ""
		if r.body != "" {
			body, ctype = strings.NewReader(r.body), "application/json"
		}
		a := send(t, r.method, u+r.path, bearerAuth(dataTok), ctype, body)
		require.Equal(t, 403, a.status, "%s %s: %s", r.method, r.path, a.body)
		noSecrets(a, r.path)
		require.Equal(t, "forbidden", a.code(t), r.path)
	}
	a := send(t, "GET", u+"/admin/v1/jobs", bearerAuth(adminTok), "", nil)
	require.Equal(t, 200, a.status, a.body)
	require.JSONEq(t, `{"jobs":[]}`, a.body, "a refused maintenance request queued a job")
	a = send(t, "GET", u+"/admin/v1/holds", bearerAuth(adminTok), "", nil)
	require.Equal(t, 200, a.status, a.body)
	require.NotContains(t, a.body, `"reason":"x"`, "a refused hold request added a hold")
}

// TestSecurityAdminBasicAuth: browsers cannot send a bearer token, so the
// admin routes also take the admin token as the password of HTTP Basic
// authentication, and the jobs UI's 401 asks the browser for it. The
// data-plane routes take bearer tokens only.
func TestSecurityAdminBasicAuth(t *testing.T) {
	t.Parallel()
	const dataTok, adminTok = "data-31c0e9a4b7f25d86", "admin-8a4f02d9c6e1b735"
	b := testserver.Start(t, testserver.Options{NoWorkers: true, Configure: func(c *config.Config) {
		c.Token, c.AdminToken, c.Listen = dataTok, adminTok, "0.0.0.0:8080"
	}})
	u := b.HTTP.URL
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}

	req, err := http.NewRequest("GET", u+"/admin/ui/", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 401, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm="), resp.Header.Get("WWW-Authenticate"))

	for _, user := range []string{"admin", "", "alice"} {
		require.Equal(t, 200, send(t, "GET", u+"/admin/ui/", basic(user, adminTok), "", nil).status, user)
		require.Equal(t, 200, send(t, "GET", u+"/admin/v1/audit", basic(user, adminTok), "", nil).status, user)
	}
	// The UI's own API calls, which the browser repeats with the password
	// it was given for the realm.
	a0 := send(t, "GET", u+"/admin/ui/api/jobs?state=completed&limit=20", "", "", nil)
	require.Equal(t, 401, a0.status)
	a0 = send(t, "GET", u+"/admin/ui/api/jobs?state=completed&limit=20", basic("admin", adminTok), "", nil)
	require.Equal(t, 200, a0.status, a0.body)
	require.Contains(t, a0.body, `"data"`)
	a := send(t, "GET", u+"/admin/ui/", basic("admin", dataTok), "", nil)
	require.Equal(t, 403, a.status, a.body)
	a = send(t, "GET", u+"/admin/ui/", basic("admin", "guess"), "", nil)
	require.Equal(t, 401, a.status, a.body)
	require.NotContains(t, a.body, adminTok)
	// The data plane: bearer only.
	require.Equal(t, 401, send(t, "GET", u+"/v1/datasets", basic("admin", dataTok), "", nil).status)
	require.Equal(t, 401, send(t, "GET", u+"/v1/datasets", basic("admin", adminTok), "", nil).status)
}

// TestSecurityAdminDisabledOffLoopback: listening beyond loopback without an
// admin token logs a warning and refuses every admin route, even to the
// data-plane token, while /v1 keeps working.
func TestSecurityAdminDisabledOffLoopback(t *testing.T) {
	t.Parallel()
	const dataTok = "data-3c0a8e91f4d2b7e6"
	var logs syncBuffer
	b := testserver.Start(t, testserver.Options{NoWorkers: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Configure: func(c *config.Config) {
			c.Token, c.Listen = dataTok, ":8080" // every interface
		}})
	require.Contains(t, logs.String(), "admin routes disabled: listening on a non-loopback address without TIMESTORE_ADMIN_TOKEN")
	require.Contains(t, logs.String(), `"level":"WARN"`)
	for _, auth := range []string{"", bearerAuth(dataTok), bearerAuth("anything")} {
		for _, r := range adminRoutes {
			var body io.Reader
			if r.body != "" {
				body = strings.NewReader(r.body)
			}
			a := send(t, r.method, b.HTTP.URL+r.path, auth, "application/json", body)
			require.Equal(t, 403, a.status, "%s %s: %s", r.method, r.path, a.body)
			require.Equal(t, "forbidden", a.code(t))
			require.Contains(t, a.body, "TIMESTORE_ADMIN_TOKEN")
		}
	}
	require.Equal(t, 200, send(t, "GET", b.HTTP.URL+"/v1/datasets", bearerAuth(dataTok), "", nil).status)

	// What counts as loopback.
	for listen, loopback := range map[string]bool{
		"127.0.0.1:8080": true, "127.0.0.2:80": true, "[::1]:8080": true, "localhost:8080": true,
		"0.0.0.0:8080": false, "[::]:8080": false, ":8080": false, "192.0.2.10:8080": false, "example.com:80": false,
		"localhost.example.com:80": false,
	} {
		require.Equal(t, loopback, config.Config{Listen: listen}.ListensOnLoopback(), listen)
	}
}

// serveProc is `timestore serve` run in-process through the CLI, as an
// operator runs it, with its log (stderr) captured.
type serveProc struct {
	URL    string
	Logs   *syncBuffer
	cancel context.CancelFunc
	done   chan int
	once   sync.Once
	code   int
}

// startServe writes yamlText as the config file and runs `timestore serve`
// on it; the config must listen on 127.0.0.1:0.
func startServe(t *testing.T, yamlText string) *serveProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "timestore.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yamlText), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	p := &serveProc{Logs: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	var stdout syncBuffer
	go func() { p.done <- cli.Execute(ctx, []string{"serve", "--config", path}, &stdout, p.Logs) }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		for line := range strings.SplitSeq(p.Logs.String(), "\n") {
			var e struct{ Msg, Address string }
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "serving" && e.Address != "" {
				p.URL = "http://" + e.Address
				return p
			}
		}
		select {
		case code := <-p.done:
			p.done <- code
			t.Fatalf("timestore serve exited with %d:\n%s", code, p.Logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("timestore serve did not start within 90s:\n%s", p.Logs.String())
	return nil
}

// stop cancels the serve command (as SIGTERM does) and returns its exit code.
func (p *serveProc) stop(t *testing.T) int {
	p.once.Do(func() {
		p.cancel()
		select {
		case p.code = <-p.done:
		case <-time.After(60 * time.Second):
			t.Errorf("timestore serve did not stop within 60s")
			p.code = -1
		}
	})
	return p.code
}

// requestCount reads timestore_http_requests_total for a route and status
// code from /metrics.
func requestCount(t *testing.T, base, route, code string) int {
	t.Helper()
	a := send(t, "GET", base+"/metrics", "", "", nil)
	require.Equal(t, 200, a.status)
	n := 0
	for line := range strings.SplitSeq(a.body, "\n") {
		if strings.HasPrefix(line, "timestore_http_requests_total{") && strings.Contains(line, `route="`+route+`"`) && strings.Contains(line, `code="`+code+`"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(t, err, line)
			n += int(v)
		}
	}
	return n
}

func rawRequest(method, path, ctype, body string) string {
	return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: timestore\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
		method, path, ctype, len(body), body)
}

// TestSecuritySlowClients runs `timestore serve` with short limits and checks
// over real TCP that a client dribbling its headers or its body, or not
// reading its answer, is cut off within a bound, and that a query running
// past its timeout gets 504.
func TestSecuritySlowClients(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	p := startServe(t, fmt.Sprintf(`database_url: %q
listen: 127.0.0.1:0
data_dir: %q
read_header_timeout: 500ms
read_timeout: 2s
query_timeout: 4s
duckdb_threads: 2
duckdb_memory_limit: 1GB
jobs:
  reconcile_schedule: "off"
`, pgtest.NewDatabaseURL(t), dataDir))
	addr := strings.TrimPrefix(p.URL, "http://")
	create := `{"name":"cpu","columns":[{"name":"ts","type":"timestamp"},{"name":"host","type":"varchar"},{"name":"value","type":"double"}],"time_column":"ts"}`
	require.Equal(t, 201, send(t, "POST", p.URL+"/v1/datasets", "", "application/json", strings.NewReader(create)).status)

	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	// dribble writes chunk every 100ms until stop is closed or a write fails.
	dribble := func(c net.Conn, chunk string, stop <-chan struct{}) {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				if _, err := c.Write([]byte(chunk)); err != nil {
					return
				}
			}
		}
	}

	// The attacks are independent; run them at once.
	t.Run("attacks", func(t *testing.T) {
		t.Run("headers dribbled", func(t *testing.T) {
			t.Parallel()
			c := dial(t)
			start := time.Now()
			_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: timestore\r\n")
			require.NoError(t, err)
			stop := make(chan struct{})
			defer close(stop)
			go dribble(c, "X-Slow: 1\r\n", stop)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
			got, err := io.ReadAll(c) // until the server closes the connection
			elapsed := time.Since(start)
			require.False(t, isTimeout(err), "the server kept a connection dribbling headers for 20s")
			require.NotContains(t, string(got), "200 OK", "a request whose headers took longer than the limit was served")
			require.GreaterOrEqual(t, elapsed, 400*time.Millisecond)
			require.Less(t, elapsed, 5*time.Second, "cut off after %s", elapsed)
			t.Logf("headers dribbled: connection closed after %s (read_header_timeout 500ms), answer %q", elapsed.Round(time.Millisecond), got)
		})

		t.Run("body dribbled", func(t *testing.T) {
			t.Parallel()
			c := dial(t)
			start := time.Now()
			_, err := io.WriteString(c, "POST /v1/datasets/cpu/rows HTTP/1.1\r\nHost: timestore\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\nts,host,value\n")
			require.NoError(t, err)
			stop := make(chan struct{})
			defer close(stop)
			go dribble(c, "2024-01-01T00:00:00Z,a,1\n", stop)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err, "no answer to a body dribbled past the read timeout")
			body, _ := io.ReadAll(resp.Body)
			elapsed := time.Since(start)
			require.Equal(t, http.StatusRequestTimeout, resp.StatusCode, "%s", body)
			require.Equal(t, "timeout", answer{resp.StatusCode, string(body)}.code(t))
			require.GreaterOrEqual(t, elapsed, 1500*time.Millisecond)
			require.Less(t, elapsed, 6*time.Second, "cut off after %s", elapsed)
			t.Logf("body dribbled: %d %s after %s (read_timeout 2s)", resp.StatusCode, strings.TrimSpace(string(body)), elapsed.Round(time.Millisecond))

			// Nothing was written: no partition, no spooled body left behind.
			a := send(t, "GET", p.URL+"/v1/datasets/cpu/partitions?state=all", "", "", nil)
			require.JSONEq(t, `{"partitions":[]}`, a.body)
			requireEmptyDir(t, filepath.Join(dataDir, "tmp"))
		})

		t.Run("answer not read", func(t *testing.T) {
			t.Parallel()
			const route = "/v1/datasets/{name}/query"
			before := requestCount(t, p.URL, route, "200")
			c := dial(t)
			if tc, ok := c.(*net.TCPConn); ok {
				require.NoError(t, tc.SetReadBuffer(4096))
			}
			start := time.Now()
			// About 10 MB of JSON, more than the socket buffers hold.
			q := `{"sql":"SELECT x, 'pad-pad-pad' AS p FROM range(400000) t(x)"}`
			_, err := io.WriteString(c, rawRequest("POST", "/v1/datasets/cpu/query", "application/json", q))
			require.NoError(t, err)
			// The client never reads. The handler must give up: the query
			// timeout (4s) plus the write grace (5s).
			deadline := time.Now().Add(30 * time.Second)
			for requestCount(t, p.URL, route, "200") == before {
				require.True(t, time.Now().Before(deadline), "a query whose client stopped reading was still being answered after 30s:\n%s", p.Logs.String())
				time.Sleep(100 * time.Millisecond)
			}
			elapsed := time.Since(start)
			require.GreaterOrEqual(t, elapsed, 4*time.Second)
			require.Less(t, elapsed, 25*time.Second)
			require.Eventually(t, func() bool { return strings.Contains(p.Logs.String(), "query answer not delivered") }, 10*time.Second, 50*time.Millisecond, p.Logs.String())
			t.Logf("answer not read: handler released after %s (query_timeout 4s + 5s write grace)", elapsed.Round(time.Millisecond))
		})

		t.Run("query timeout", func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			a := send(t, "POST", p.URL+"/v1/datasets/cpu/query", "", "application/json",
				strings.NewReader(`{"sql":"SELECT count(*) FROM range(100000000000) a(x) WHERE x % 7 = 3"}`))
			elapsed := time.Since(start)
			require.Equal(t, 504, a.status, a.body)
			require.Equal(t, "timeout", a.code(t))
			require.GreaterOrEqual(t, elapsed, 4*time.Second)
			require.Less(t, elapsed, 15*time.Second)
			// A query that runs into its own limit is the user's doing: a
			// warning, not an error to page on.
			require.Eventually(t, func() bool { return strings.Contains(p.Logs.String(), `"level":"WARN","msg":"request timed out"`) },
				5*time.Second, 50*time.Millisecond, p.Logs.String())
			t.Logf("query timeout: %d %s after %s (query_timeout 4s)", a.status, strings.TrimSpace(a.body), elapsed.Round(time.Millisecond))
		})
	})

	// Still healthy, and an ordinary ingest and query work under the limits.
	a := send(t, "POST", p.URL+"/v1/datasets/cpu/rows", "", "text/csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,a,1\n"))
	require.Equal(t, 200, a.status, a.body)
	a = send(t, "POST", p.URL+"/v1/datasets/cpu/query", "", "application/json", strings.NewReader(`{"sql":"SELECT count(*) FROM cpu"}`))
	require.Equal(t, 200, a.status, a.body)
	require.Contains(t, a.body, `"rows":[[1]]`)
	require.Equal(t, 0, p.stop(t), p.Logs.String())
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// requireEmptyDir waits briefly for dir to be empty (cleanup runs as the
// request ends).
func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	var names []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		names = names[:0]
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if len(names) == 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "left in %s: %v", dir, names)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSecurityBodyLimits: bodies over the limits are refused with 413
// whether or not their length is declared, the limit is exact, and nothing
// of a refused body is kept.
func TestSecurityBodyLimits(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	b := testserver.Start(t, testserver.Options{NoWorkers: true, MaxBodyBytes: limit})
	u := b.HTTP.URL
	create := `{"name":"cpu","columns":[{"name":"ts","type":"timestamp"},{"name":"host","type":"varchar"},{"name":"value","type":"double"}],"time_column":"ts"}`
	require.Equal(t, 201, send(t, "POST", u+"/v1/datasets", "", "application/json", strings.NewReader(create)).status)
	tmp := filepath.Join(b.Server.Config.DataDir, "tmp")

	// csvOfSize is a valid CSV body of exactly n bytes.
	csvOfSize := func(n int) string {
		var sb strings.Builder
		sb.WriteString("ts,host,value\n")
		row := "2024-01-01T00:00:00Z,a,1\n"
		for sb.Len()+len(row) <= n-len("2024-01-01T00:00:00Z,,1\n") {
			sb.WriteString(row)
		}
		pad := n - sb.Len() - len("2024-01-01T00:00:00Z,,1\n")
		sb.WriteString("2024-01-01T00:00:00Z," + strings.Repeat("h", pad) + ",1\n")
		require.Equal(t, n, sb.Len())
		return sb.String()
	}
	// Unknown length: sent chunked, so only the server's counting stops it.
	chunked := func(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) }

	for _, tc := range []struct {
		name   string
		body   io.Reader
		status int
	}{
		{"limit+1 bytes, chunked", chunked(csvOfSize(limit + 1)), 413},
		{"10x the limit, chunked", chunked(csvOfSize(10 * limit)), 413},
		{"limit+1 bytes, declared", strings.NewReader(csvOfSize(limit + 1)), 413},
	} {
		a := send(t, "POST", u+"/v1/datasets/cpu/rows", "", "text/csv", tc.body)
		require.Equal(t, tc.status, a.status, "%s: %s", tc.name, a.body)
		require.Equal(t, "body_too_large", a.code(t))
		require.Contains(t, a.body, strconv.Itoa(limit))
		requireEmptyDir(t, tmp)
		t.Logf("%s: %d %s", tc.name, a.status, strings.TrimSpace(a.body))
	}
	a := send(t, "GET", u+"/v1/datasets/cpu/partitions?state=all", "", "", nil)
	require.JSONEq(t, `{"partitions":[]}`, a.body, "a refused body was stored")

	// Exactly the limit is accepted, chunked too.
	a = send(t, "POST", u+"/v1/datasets/cpu/rows", "", "text/csv", chunked(csvOfSize(limit)))
	require.Equal(t, 200, a.status, a.body)

	// The JSON routes have a 1 MiB bound of their own.
	big := `{"sql":"SELECT '` + strings.Repeat("x", 2<<20) + `'"}`
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/datasets"},
		{"POST", "/v1/datasets/cpu/query"},
		{"PATCH", "/v1/datasets/cpu"},
		{"POST", "/admin/v1/maintenance"},
		{"POST", "/admin/v1/datasets/cpu/holds"},
	} {
		a := send(t, r.method, u+r.path, "", "application/json", chunked(big))
		require.Equal(t, 413, a.status, "%s %s: %.200s", r.method, r.path, a.body)
		require.Equal(t, "body_too_large", a.code(t))
	}
	t.Logf("2 MiB JSON body on the JSON routes: 413 body_too_large (limit 1048576)")

	// Headers over 1 MiB: 431 from net/http.
	req, err := http.NewRequest("GET", u+"/v1/datasets", nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("a", 2<<20))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	requireEmptyDir(t, tmp)
}

// TestSecurityPathTraversal: hostile dataset names in every route's path and
// in request bodies are refused, and refer to no other dataset.
func TestSecurityPathTraversal(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{NoWorkers: true})
	u := b.HTTP.URL
	ctx := context.Background()
	for _, name := range []string{"cpu", "secret"} {
		_, err := b.Client.CreateDataset(ctx, client.CreateDataset{Name: name, Columns: testserver.CPUColumns, TimeColumn: "ts", Partition: "day"})
		require.NoError(t, err)
		_, err = b.Client.Ingest(ctx, name, "csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,a,1\n"), "")
		require.NoError(t, err)
	}
	objects := filepath.Join(b.Server.Config.DataDir, "objects")
	before := listFiles(t, b.Server.Config.DataDir)

	names := []string{
		"..", ".", "%2e%2e", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fsecret", "..%2fsecret",
		"a%2Fb", "cpu%2F..%2Fsecret", "%2Fetc%2Fpasswd", "a%5Cb", "..%5Csecret", "cpu%00", "cpu%00secret",
		"cpu%0A", "cpu%20", "CPU", "Secret", "%C3%A9t%C3%A9", "-cpu", "1cpu", "_cpu", strings.Repeat("a", 64),
		"%252e%252e", "cpu;secret", "cpu'--", "cpu%22",
	}
	routes := []struct{ method, path, ctype, body string }{
		{"GET", "/v1/datasets/%s", "", ""},
		{"PATCH", "/v1/datasets/%s", "application/json", `{"policy":{}}`},
		{"DELETE", "/v1/datasets/%s", "", ""},
		{"POST", "/v1/datasets/%s/rows", "text/csv", "ts,host,value\n2024-01-01T00:00:00Z,x,2\n"},
		{"POST", "/v1/datasets/%s/query", "application/json", `{"sql":"SELECT 1"}`},
		{"GET", "/v1/datasets/%s/partitions", "", ""},
		{"GET", "/v1/datasets/%s/exports", "", ""},
		{"GET", "/admin/v1/datasets/%s/lifecycle", "", ""},
		{"POST", "/admin/v1/datasets/%s/holds", "application/json", `{"from":"2024-01-01","to":"2024-02-01","reason":"x"}`},
		{"POST", "/admin/v1/datasets/%s/partitions/restore", "application/json", `{"partition_ids":[1]}`},
		{"POST", "/admin/v1/datasets/%s/partitions/no-compact", "application/json", `{"partition_ids":[1],"no_compact":true}`},
	}
	outcomes := map[int]int{}
	for _, name := range names {
		for _, r := range routes {
			var body io.Reader
			if r.body != "" {
				body = strings.NewReader(r.body)
			}
			path := fmt.Sprintf(r.path, name)
			a := send(t, r.method, u+path, "", r.ctype, body)
			outcomes[a.status]++
			switch a.status {
			case 400:
				require.Contains(t, a.body, "invalid dataset name", "%s %s", r.method, path)
			case 404, 405: // no such route: the name never reached a handler
			case 301, 307, 308: // ServeMux cleaning a path with dot segments
			default:
				t.Fatalf("%s %s: %d %s", r.method, path, a.status, a.body)
			}
		}
	}
	t.Logf("%d hostile names x %d routes: statuses %v", len(names), len(routes), outcomes)

	// In bodies: the names of new datasets, their targets, maintenance.
	for _, name := range []string{"..", "../secret", "a/b", `a\b`, "cpu\x00", "cpu\n", "", " cpu", "é", strings.Repeat("a", 64), "secret/../cpu"} {
		body, _ := json.Marshal(map[string]any{"name": name, "columns": []map[string]string{{"name": "ts", "type": "timestamp"}}, "time_column": "ts"})
		a := send(t, "POST", u+"/v1/datasets", "", "application/json", bytes.NewReader(body))
		require.Equal(t, 400, a.status, "%q: %s", name, a.body)
		body, _ = json.Marshal(map[string]any{"kind": "compaction", "dataset": name})
		a = send(t, "POST", u+"/admin/v1/maintenance", "", "application/json", bytes.NewReader(body))
		require.Equal(t, 400, a.status, "maintenance %q: %s", name, a.body)
	}
	for _, target := range []string{"../local", "local/..", "/etc", "file:///etc", "s3://bucket", "LOCAL", "local\x00"} {
		body, _ := json.Marshal(map[string]any{"name": "x", "columns": []map[string]string{{"name": "ts", "type": "timestamp"}}, "time_column": "ts", "target": target})
		a := send(t, "POST", u+"/v1/datasets", "", "application/json", bytes.NewReader(body))
		require.Equal(t, 400, a.status, "target %q: %s", target, a.body)
	}
	for _, col := range []string{"../x", "a b", "ts;DROP", `x"y`, ""} {
		body, _ := json.Marshal(map[string]any{"name": "x", "columns": []map[string]string{{"name": "ts", "type": "timestamp"}, {"name": col, "type": "double"}}, "time_column": "ts"})
		a := send(t, "POST", u+"/v1/datasets", "", "application/json", bytes.NewReader(body))
		require.Equal(t, 400, a.status, "column %q: %s", col, a.body)
	}

	// Nothing changed: the same files, both datasets intact, no stray file
	// outside the objects directory.
	require.Equal(t, before, listFiles(t, b.Server.Config.DataDir))
	for _, name := range []string{"cpu", "secret"} {
		res, err := b.Client.Query(ctx, name, client.QueryRequest{SQL: "SELECT count(*) FROM " + name})
		require.NoError(t, err)
		require.Equal(t, [][]any{{json.Number("1")}}, res.Rows)
	}
	list, err := b.Client.ListDatasets(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	for _, f := range before {
		if strings.HasSuffix(f, ".parquet") {
			require.True(t, strings.HasPrefix(filepath.Join(b.Server.Config.DataDir, f), objects+"/"), f)
		}
	}
}

// listFiles lists the regular files under dir, relative to it, skipping the
// read cache and temp directories.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			if !strings.HasPrefix(rel, "spill/") {
				out = append(out, rel)
			}
		}
		return nil
	}))
	return out
}

// TestSecuritySQLSandboxHTTP adds to TestSQLSandbox the escapes that
// internal/engine's tests try below the API: other datasets' files by glob,
// URLs, environment variables, secrets, settings and catalog functions.
func TestSecuritySQLSandboxHTTP(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{NoWorkers: true})
	ctx := context.Background()
	for _, name := range []string{"cpu", "secret"} {
		_, err := b.Client.CreateDataset(ctx, client.CreateDataset{Name: name, Columns: testserver.CPUColumns, TimeColumn: "ts", Partition: "day"})
		require.NoError(t, err)
		_, err = b.Client.Ingest(ctx, name, "csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,host-of-"+name+",42\n"), "")
		require.NoError(t, err)
	}
	objects := filepath.Join(b.Server.Config.DataDir, "objects")
	sp, err := b.Client.Partitions(ctx, "secret", "live")
	require.NoError(t, err)
	secretFile := filepath.Join(objects, sp[0].Key)
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	leaks := []string{"host-of-secret", "root:x:0:0", s3test.SecretAccessKey}

	for _, tc := range []struct{ sql, msg string }{
		{"SELECT * FROM read_parquet(" + q(objects+"/*/*/*.parquet") + ")", "Permission Error"},
		{"SELECT * FROM read_parquet(" + q(objects+"/**/*.parquet") + ")", "Permission Error"},
		{"SELECT * FROM read_parquet([" + q(sp[0].Key) + "])", "Permission Error"},
		{"SELECT * FROM parquet_metadata(" + q(secretFile) + ")", "Permission Error"},
		{"SELECT * FROM parquet_scan(" + q(secretFile) + ")", "Permission Error"},
		{"SELECT * FROM glob(" + q(objects+"/**") + ")", "Permission Error"},
		{"SELECT * FROM read_text('/etc/passwd')", "Permission Error"},
		{"SELECT * FROM read_blob('/etc/passwd')", "Permission Error"},
		{"SELECT * FROM read_csv('/proc/self/environ')", "Permission Error"},
		{"SELECT * FROM read_json('/proc/self/environ')", "Permission Error"},
		{"SELECT * FROM sniff_csv('/etc/passwd')", "Permission Error"},
		{"SELECT * FROM '/etc/passwd'", "does not exist"},
		{"SELECT * FROM " + q(secretFile), "Permission Error"},
		{"SELECT * FROM read_csv('http://127.0.0.1:1/x.csv')", "Permission Error"},
		{"SELECT * FROM read_csv('https://127.0.0.1:1/x.csv')", "Permission Error"},
		{"SELECT * FROM read_parquet('s3://bucket/x.parquet')", "Permission Error"},
		{"SELECT getenv('AWS_SECRET_ACCESS_KEY')", "does not exist"},
		{"SELECT * FROM duckdb_secrets()", "Permission Error"},
		{"CALL duckdb_secrets()", "not CALL"},
		{"SELECT * FROM duckdb_extensions()", "Permission Error"},
		{"PRAGMA database_list", "not PRAGMA"},
		{"PRAGMA enable_external_access", "not PRAGMA"},
		{"SELECT * FROM pragma_database_list()", "does not exist"},
		{"SET enable_external_access = true", "not SET"},
		{"SELECT set_config('enable_external_access', 'true')", "does not exist"},
		{"RESET allowed_paths", "not RESET"},
		{"SELECT * FROM query('SELECT * FROM secret')", "does not exist"},
		{"SELECT * FROM query_table('secret')", "does not exist"},
		{"ATTACH " + q(secretFile) + " AS s", "not ATTACH"},
		{"DETACH memory", "not DETACH"},
		{"EXPORT DATABASE '/tmp/timestore-export'", "not EXPORT"},
		{"COPY cpu TO '/tmp/timestore-copy.csv'", "not COPY"},
		{"INSTALL httpfs FROM 'http://127.0.0.1:1'", "not INSTALL"},
		{"LOAD '/tmp/evil.duckdb_extension'", "not LOAD"},
		{"SELECT 1; ATTACH ':memory:' AS x", "single SQL statement"},
	} {
		_, err := b.Client.Query(ctx, "cpu", client.QueryRequest{SQL: tc.sql})
		var ce *client.Error
		require.ErrorAs(t, err, &ce, tc.sql)
		require.Equal(t, 400, ce.Status, "%s: %s", tc.sql, ce.Message)
		require.Equal(t, "invalid_sql", ce.Code, tc.sql)
		// A table function outside the allowlist is refused before DuckDB
		// sees it; the message DuckDB's own defence would give applies to
		// the allowed ones (read_parquet of another file: Permission Error).
		refusedEarly := strings.Contains(ce.Message, "is not allowed: a query reads its dataset")
		require.True(t, strings.Contains(ce.Message, tc.msg) || refusedEarly, "%s: %s", tc.sql, ce.Message)
		for _, l := range leaks {
			require.NotContains(t, ce.Message, l, tc.sql)
		}
		t.Logf("%s => %d %s: %s", tc.sql, ce.Status, ce.Code, firstLine(ce.Message))
	}
	for _, f := range []string{"/tmp/timestore-export", "/tmp/timestore-copy.csv"} {
		_, err := os.Stat(f)
		require.True(t, os.IsNotExist(err), "%s was written", f)
	}
	// A query sees its dataset, not the instance around it: system views,
	// settings and instance-changing table functions are refused.
	for q, msg := range map[string]string{
		"SELECT table_name FROM information_schema.tables ORDER BY 1": "system table tables is not available",
		"SELECT value FROM duckdb_settings()":                         "table function duckdb_settings is not allowed",
		"SELECT current_setting('temp_directory')":                    "settings are not available",
		"SELECT * FROM enable_logging()":                              "table function enable_logging is not allowed",
		"SELECT message FROM duckdb_logs":                             "system table duckdb_logs is not available",
	} {
		_, err := b.Client.Query(ctx, "cpu", client.QueryRequest{SQL: q})
		var ce *client.Error
		require.ErrorAs(t, err, &ce, q)
		require.Equal(t, 400, ce.Status, q)
		require.Contains(t, ce.Message, msg, q)
	}
	res, err := b.Client.Query(ctx, "cpu", client.QueryRequest{SQL: "SELECT count(*) FROM cpu"})
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// TestSecuritySecretsRedacted runs `timestore serve` with every kind of
// secret configured (tokens, a catalog password, a storage URL password, S3
// credentials in the environment), drives it through refused, successful and
// failing requests (the S3 target stopped), prints its configuration and
// fails it at start-up, and checks that no secret appears in the log, in any
// answer or in the printed configuration.
func TestSecuritySecretsRedacted(t *testing.T) {
	t.Parallel()
	const (
		dataTok  = "data-tok-7e1f0c5a93b2"
		adminTok = "admin-tok-2b9d4e6f8a10"
		pgPass   = "pg-pass-51c8e2a7"
		s3Pass   = "s3-pass-9d03b6e4"
	)
	secrets := []string{dataTok, adminTok, pgPass, s3Pass, s3test.SecretAccessKey}
	var seen []string // every answer body and CLI output, checked at the end
	check := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			require.NotContains(t, text, s, "%s leaks a secret:\n%s", what, text)
		}
	}

	dbu, err := url.Parse(pgtest.NewDatabaseURL(t))
	require.NoError(t, err)
	dbu.User = url.UserPassword("postgres", pgPass) // trust auth: accepted, never checked
	s3 := s3test.Start(t)
	remote, err := url.Parse(s3.NewBucket(t))
	require.NoError(t, err)
	remote.User = url.UserPassword("s3user", s3Pass)
	cfg := fmt.Sprintf(`database_url: %q
listen: 127.0.0.1:0
data_dir: %q
token: %q
admin_token: %q
targets:
  remote: %q
log_level: debug
duckdb_threads: 2
duckdb_memory_limit: 1GB
jobs:
  reconcile_schedule: "off"
  max_attempts: 2
`, dbu.String(), t.TempDir(), dataTok, adminTok, remote.String())
	p := startServe(t, cfg)
	u := p.URL
	do := func(method, path, auth, ctype, body string) answer {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		a := send(t, method, u+path, auth, ctype, r)
		seen = append(seen, fmt.Sprintf("%s %s -> %d %s", method, path, a.status, a.body))
		return a
	}

	// Refused: no token, near misses, the wrong token for the route.
	require.Equal(t, 401, do("GET", "/v1/datasets", "", "", "").status)
	require.Equal(t, 401, do("GET", "/v1/datasets", bearerAuth(dataTok+"x"), "", "").status)
	require.Equal(t, 401, do("GET", "/admin/v1/jobs", bearerAuth(adminTok[:len(adminTok)-1]), "", "").status)
	require.Equal(t, 403, do("GET", "/admin/v1/jobs", bearerAuth(dataTok), "", "").status)
	// Served.
	create := `{"name":"cpu","columns":[{"name":"ts","type":"timestamp"},{"name":"host","type":"varchar"},{"name":"value","type":"double"}],"time_column":"ts","target":"remote"}`
	require.Equal(t, 201, do("POST", "/v1/datasets", bearerAuth(dataTok), "application/json", create).status)
	a := do("POST", "/v1/datasets/cpu/rows", bearerAuth(dataTok), "text/csv", "ts,host,value\n2024-01-01T00:00:00Z,a,1\n")
	require.Equal(t, 200, a.status, a.body)
	require.Equal(t, 200, do("POST", "/v1/datasets/cpu/query", bearerAuth(dataTok), "application/json", `{"sql":"SELECT count(*) FROM cpu"}`).status)
	require.Equal(t, 200, do("GET", "/v1/datasets/cpu", bearerAuth(adminTok), "", "").status)
	require.Equal(t, 200, do("GET", "/admin/v1/audit", bearerAuth(adminTok), "", "").status)
	require.Equal(t, 200, do("GET", "/readyz", "", "", "").status)
	require.Equal(t, 200, do("GET", "/metrics", "", "", "").status)

	// Storage fails: the S3 server is gone.
	s3.Stop()
	a = do("POST", "/v1/datasets/cpu/rows", bearerAuth(dataTok), "text/csv", "ts,host,value\n2024-01-02T00:00:00Z,a,2\n")
	require.GreaterOrEqual(t, a.status, 500, a.body)
	t.Logf("ingest with the S3 target down: %d %s", a.status, strings.TrimSpace(a.body))
	a = do("POST", "/admin/v1/maintenance", bearerAuth(adminTok), "application/json", `{"kind":"reconcile","dataset":"cpu"}`)
	require.Equal(t, 202, a.status, a.body)
	var job struct {
		JobID int64 `json:"job_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(a.body), &job))
	// The failed attempt's error is kept with the job and shown to admins.
	deadline := time.Now().Add(60 * time.Second)
	for {
		a = do("GET", fmt.Sprintf("/admin/v1/jobs/%d", job.JobID), bearerAuth(adminTok), "", "")
		require.Equal(t, 200, a.status, a.body)
		if strings.Contains(a.body, `"errors":[{`) || strings.Contains(a.body, `"state":"discarded"`) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the reconcile job recorded no error within 60s: %s", a.body)
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("reconcile job with the S3 target down: %.300s", a.body)
	require.Equal(t, 200, do("GET", "/admin/v1/jobs", bearerAuth(adminTok), "", "").status)
	require.Equal(t, 0, p.stop(t))

	logs := p.Logs.String()
	// The log did record the failures (so the check below looks at them).
	require.Contains(t, logs, `"msg":"serving"`)
	require.Contains(t, logs, `"msg":"request failed"`)
	require.Contains(t, logs, "/v1/datasets/cpu/rows")
	check("the server log", logs)
	for _, s := range seen {
		check("an answer", s)
	}

	// The configuration dump, with a catalog URL of each form.
	for _, dsn := range []string{
		dbu.String(),
		"host=127.0.0.1 port=5432 user=postgres password=" + pgPass + " dbname=x",
		"host=127.0.0.1 user=postgres password='" + pgPass + " with spaces' dbname=x",
		"postgres://postgres@127.0.0.1/x?password=" + pgPass + "&sslmode=disable",
	} {
		dump := cfg + ""
		dump = strings.Replace(dump, fmt.Sprintf("database_url: %q", dbu.String()), fmt.Sprintf("database_url: %q", dsn), 1)
		path := filepath.Join(t.TempDir(), "timestore.yaml")
		require.NoError(t, os.WriteFile(path, []byte(dump), 0o600))
		var stdout, stderr bytes.Buffer
		code := cli.Execute(context.Background(), []string{"config", "--config", path}, &stdout, &stderr)
		require.Equal(t, 0, code, stderr.String())
		check("timestore config", stdout.String())
		require.Contains(t, stdout.String(), "REDACTED")
		require.Contains(t, stdout.String(), "s3user", "redaction keeps what is not secret")

		// Start-up failures print the catalog URL's error, not its password.
		stdout.Reset()
		stderr.Reset()
		bad := strings.Replace(dump, "dbname=x", "dbname=timestore_no_such_db", 1)
		bad = strings.Replace(bad, "/x?", "/timestore_no_such_db?", 1)
		bad = strings.Replace(bad, dbu.Path, "/timestore_no_such_db", 1)
		require.NoError(t, os.WriteFile(path, []byte(bad), 0o600))
		code = cli.Execute(context.Background(), []string{"migrate", "--config", path}, &stdout, &stderr)
		require.NotEqual(t, 0, code)
		check("a failed migrate", stdout.String()+stderr.String())
		t.Logf("migrate with a missing database: %s", strings.TrimSpace(stderr.String()))
	}
}
