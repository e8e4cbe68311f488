// Package api serves timestore's HTTP interface: the /v1 data plane, the
// /admin/v1 operations routes, /metrics and the health checks. Every error is
// answered as JSON {"error":{"code","message"}} with a fitting status.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"timestore/internal/catalog"
	"timestore/internal/ingest"
	"timestore/internal/query"
	"timestore/internal/storage"
)

// Defaults.
const (
	// MaxBodyBytesDefault bounds an ingest body when Options.MaxBodyBytes is zero.
	MaxBodyBytesDefault int64 = 256 << 20
	// maxJSONBody bounds the small JSON bodies of the other routes.
	maxJSONBody = 1 << 20
	// queryWriteGrace is how long past the query timeout a query's answer
	// may take to reach the client before the connection is cut, so that a
	// client that stops reading cannot hold a query (its snapshot lease and
	// sandbox) forever.
	queryWriteGrace = 5 * time.Second
)

// Options configures a Server.
type Options struct {
	Store   *catalog.Store
	Targets *storage.Targets
	Ingest  *ingest.Service
	Query   *query.Service
	Logger  *slog.Logger
	// Registerer receives the HTTP metrics; Gatherer is served at /metrics.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Token, when set, is required as a bearer token on /v1/*.
	Token string
	// AdminToken, when set, is required as a bearer token on /admin/*.
	AdminToken string
	// AdminEnabled serves /admin/* (the caller decides: a token is set, or the
	// listen address is loopback).
	AdminEnabled bool
	// MaxBodyBytes bounds an ingest body. Defaults to MaxBodyBytesDefault.
	MaxBodyBytes int64
	// QueryTimeout is the query service's timeout; a query's answer must be
	// written within it plus queryWriteGrace. Defaults to query.TimeoutDefault.
	QueryTimeout time.Duration
	// Jobs runs and inspects lifecycle jobs for /admin/v1; nil answers 503 there.
	Jobs Jobs
	// AdminUI is the jobs web UI served at /admin/ui/ behind the admin auth.
	AdminUI http.Handler
	// Retention serves the hold and restore routes; nil answers 503 there.
	Retention Retention
}

// Server is the HTTP handler.
type Server struct {
	opts    Options
	log     *slog.Logger
	handler http.Handler
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = MaxBodyBytesDefault
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = query.TimeoutDefault
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(opts.Registerer)
	s := &Server{
		opts: opts,
		log:  opts.Logger,
		reqs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "timestore_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, []string{"route"}),
	}

	mux := http.NewServeMux()
	handle := func(pattern string, h func(http.ResponseWriter, *http.Request) error, auth func(http.Handler) http.Handler) {
		route := pattern
		if _, r, ok := strings.Cut(pattern, " "); ok {
			route = r
		}
		var hh http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				s.writeError(w, r, err)
			}
		})
		if auth != nil {
			hh = auth(hh)
		}
		mux.Handle(pattern, s.instrument(route, hh))
	}
	handle("GET /healthz", s.healthz, nil)
	handle("GET /readyz", s.readyz, nil)
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	v1 := s.requireToken
	handle("POST /v1/datasets", s.createDataset, v1)
	handle("GET /v1/datasets", s.listDatasets, v1)
	handle("GET /v1/datasets/{name}", s.getDataset, v1)
	handle("PATCH /v1/datasets/{name}", s.patchDataset, v1)
	handle("DELETE /v1/datasets/{name}", s.deleteDataset, v1)
	handle("POST /v1/datasets/{name}/rows", s.ingestRows, v1)
	handle("POST /v1/datasets/{name}/query", s.query, v1)
	handle("GET /v1/datasets/{name}/partitions", s.listPartitions, v1)
	s.exportRoutes(handle)

	if opts.AdminEnabled {
		s.adminRoutes(mux, handle)
	} else {
		mux.Handle("/admin/", s.instrument("/admin/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.writeError(w, r, &httpError{http.StatusForbidden, CodeForbidden,
				"admin routes are disabled: set TIMESTORE_ADMIN_TOKEN, or listen on a loopback address"})
		})))
	}
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	}))
	s.handler = mux
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		s.reqs.WithLabelValues(route, fmt.Sprint(sw.status)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		s.log.DebugContext(r.Context(), "http request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "duration", time.Since(start))
	})
}

type ctxKey struct{}

// actor returns who made the request, as recorded in the audit log.
func actor(r *http.Request) string {
	if a, ok := r.Context().Value(ctxKey{}).(string); ok {
		return a
	}
	return "api:anonymous"
}

// TokenHint says how a client passes the data-plane token.
const TokenHint = `pass the server's token (its TIMESTORE_TOKEN) with --token TOKEN or the environment variable TIMESTORE_TOKEN on the CLI, or as the header "Authorization: Bearer TOKEN" over HTTP`

// AdminTokenHint says how a client passes the admin token.
const AdminTokenHint = `pass the server's admin token (its TIMESTORE_ADMIN_TOKEN) with the environment variable TIMESTORE_ADMIN_TOKEN or --token on the CLI, or as the header "Authorization: Bearer TOKEN" over HTTP`

// bearer returns the token of an "Authorization: Bearer TOKEN" header. The
// scheme name is case-insensitive (RFC 9110 section 11.1); the token is not.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// tokenEqual compares a presented token with a configured one in constant
// time; comparing digests hides the configured token's length too.
func tokenEqual(a, b string) bool {
	if b == "" {
		return false
	}
	da, db := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(da[:], db[:]) == 1
}

// requireToken guards /v1: the data-plane token or the admin token, when a
// data-plane token is configured. Without one /v1 is open: a request is
// served whatever token it carries (API.md), as "api:admin" in the audit
// log when that is the admin token, else as "api:anonymous".
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "api:anonymous"
		if tok, ok := bearer(r); ok {
			switch {
			case tokenEqual(tok, s.opts.AdminToken):
				who = "api:admin"
			case tokenEqual(tok, s.opts.Token):
				who = "api:user"
			case s.opts.Token == "":
			default:
				s.writeError(w, r, &httpError{http.StatusUnauthorized, CodeUnauthorized, "invalid bearer token: " + TokenHint})
				return
			}
		} else if s.opts.Token != "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="timestore"`)
			s.writeError(w, r, &httpError{http.StatusUnauthorized, CodeUnauthorized, "a bearer token is required: " + TokenHint})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, who)))
	})
}

// adminCredential returns the token of a request to /admin: a bearer token
// or, for browsers (which cannot send one), the password of HTTP Basic
// authentication, whatever the user name.
func adminCredential(r *http.Request) (string, bool) {
	if tok, ok := bearer(r); ok {
		return tok, true
	}
	if _, pw, ok := r.BasicAuth(); ok && pw != "" {
		return pw, true
	}
	return "", false
}

// requireAdmin guards /admin: 401 without a valid token, 403 with the
// data-plane token. Without a configured admin token (loopback only), open.
// The token is a bearer token or, so that the jobs UI opens in a browser,
// the password of HTTP Basic authentication: the UI's 401 asks the browser
// for it.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "api:admin"
		if s.opts.AdminToken != "" {
			tok, ok := adminCredential(r)
			challenge := func() {
				if strings.HasPrefix(r.URL.Path, "/admin/ui") {
					// A browser asks for the password again.
					w.Header().Set("WWW-Authenticate", `Basic realm="timestore admin (password: the admin token)", charset="UTF-8"`)
				} else {
					w.Header().Set("WWW-Authenticate", `Bearer realm="timestore-admin"`)
				}
			}
			switch {
			case !ok:
				challenge()
				s.writeError(w, r, &httpError{http.StatusUnauthorized, CodeUnauthorized, "the admin token is required: " + AdminTokenHint})
				return
			case tokenEqual(tok, s.opts.AdminToken):
			case tokenEqual(tok, s.opts.Token):
				s.writeError(w, r, &httpError{http.StatusForbidden, CodeForbidden, "the data-plane token does not grant admin access"})
				return
			default:
				challenge()
				s.writeError(w, r, &httpError{http.StatusUnauthorized, CodeUnauthorized, "invalid admin token: " + AdminTokenHint})
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, who)))
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.opts.Store.Ping(ctx); err != nil {
		s.log.WarnContext(ctx, "not ready", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "catalog unreachable"})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// decodeJSON decodes a small JSON body strictly into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &httpError{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, fmt.Sprintf("content type %q: want application/json", ct)}
	}
	dec := json.NewDecoder(requestBody(w, r, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var he *httpError
		if errors.As(err, &mbe) || errors.As(err, &he) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return badRequest("empty body: a JSON object is required")
		}
		return badRequest("invalid JSON body: " + err.Error())
	}
	if dec.More() {
		return badRequest("invalid JSON body: more than one value")
	}
	return nil
}

// requestBody bounds r's body to limit bytes (a larger one fails with
// *http.MaxBytesError, answered 413) and turns a read cut off by the
// server's read timeout (a client sending too slowly) into a 408.
func requestBody(w http.ResponseWriter, r *http.Request, limit int64) io.Reader {
	return deadlineReader{http.MaxBytesReader(w, r.Body, limit)}
}

type deadlineReader struct{ r io.Reader }

func (d deadlineReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = &httpError{http.StatusRequestTimeout, CodeTimeout,
			"the request body was not received within the server's read timeout"}
	}
	return n, err
}
