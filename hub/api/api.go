// Package api is the hub's HTTP interface (chi): health and readiness,
// Prometheus metrics, and the REST API under /api/v1 that openapi.yaml
// describes (a test holds the two together): document search, detail,
// downloads and verification, units with their counters, users and API
// tokens. It is a thin face on the hub's application service
// (hub/service), which holds every operation and its access rules; the web
// UI (hub/web) is the other.
//
// Requests are identified by hub/auth: an API token or the admin token
// (Authorization: Bearer), or a sign-in session cookie. Unsafe requests
// made with a session cookie must carry its CSRF token (X-CSRF-Token).
// Errors are JSON {"error": "..."}, with the HTTP status of the service's
// one table (service.Status); internal detail is logged, not shown.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service"
)

// DefaultListen is the hub's HTTP address.
const DefaultListen = "127.0.0.1:8080"

// OpenAPI is the description of the API, served at /api/v1/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Config configures the HTTP server.
type Config struct {
	Listen string `yaml:"listen"`
	// MaxVerifications bounds the containers verified at once for the API
	// and the web UI (service.Deps.MaxVerifications); 0: one per CPU.
	MaxVerifications int `yaml:"max_verifications"`
}

// Validate checks the listen address and the verification bound.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("http: listen %q: %w", c.Listen, err)
	}
	if c.MaxVerifications < 0 || c.MaxVerifications > 1024 {
		return fmt.Errorf("http: max_verifications %d: want 0 (one per CPU) to 1024", c.MaxVerifications)
	}
	return nil
}

// pendingRetryAfter is the Retry-After of service.ErrPending, in seconds.
const pendingRetryAfter = 5

// Deps are the API's collaborators.
type Deps struct {
	// Service is what the API is a face of: every operation goes through
	// it, with the caller's identity.
	Service *service.Service
	// Auth identifies requests (tokens, sessions, CSRF); nil accepts the
	// admin token alone.
	Auth     *auth.Store
	Ready    func(ctx context.Context) map[string]error // readiness checks by name (NATS, write checks, CRLs), over the pings
	Gatherer prometheus.Gatherer
	// AdminToken (DATA/admin.token) acts as an admin: edx unit add, edx get
	// and scripts on the hub's machine use it.
	AdminToken string
	// Web serves every path the API does not (the UI); nil serves none.
	Web http.Handler
	Log *slog.Logger
}

// Handler returns the hub's HTTP handler.
func Handler(d Deps) http.Handler {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	s := &server{d: d, svc: d.Service}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer, s.logRequests, s.identify)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", s.ready)
	if d.Gatherer != nil {
		r.Method("GET", "/metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{}))
	}
	r.Route("/api/v1", func(r chi.Router) {
		r.Use(apiHeaders)
		r.Get("/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/yaml")
			w.Write(OpenAPI)
		})
		r.Group(func(r chi.Router) {
			r.Use(s.requireIdentity)
			r.Get("/me", s.me)
			r.Get("/documents", s.search)
			r.Get("/documents/{id}", s.document)
			r.Get("/documents/{id}/container", s.download("container"))
			r.Get("/documents/{id}/receipt", s.download("receipt"))
			r.Get("/documents/{id}/signatures/{sha256}", s.statusSignature)
			r.Get("/documents/{id}/files/{name}", s.file)
			r.Post("/documents/{id}/verify", s.verifyArchived)
			r.Get("/documents/{id}/proof", s.proof)
			r.Get("/documents/{id}/bundle", s.bundle)
			r.Get("/log", s.logInfo)
			r.Post("/verify", s.verifyUpload)
			r.Get("/units", s.listUnits)
			r.Post("/units", s.addUnit)
			r.Get("/units/{id}", s.unit)
			r.Post("/units/{id}/disable", s.disableUnit)
			r.Post("/units/{id}/enable", s.enableUnit)
			r.Post("/units/{id}/rotate", s.rotateUnit)
			r.Get("/units/{id}/overdue", s.unitList("overdue"))
			r.Get("/units/{id}/pending", s.unitList("pending"))
			r.Get("/users", s.listUsers)
			r.Post("/users", s.addUser)
			r.Get("/users/{name}", s.getUser)
			r.Patch("/users/{name}", s.updateUser)
			r.Get("/tokens", s.listTokens)
			r.Post("/tokens", s.newToken)
			r.Delete("/tokens/{id}", s.revokeToken)
		})
	})
	if d.Web != nil {
		r.Handle("/*", d.Web)
	}
	return r
}

type server struct {
	d   Deps
	svc *service.Service
}

func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		t := time.Now()
		next.ServeHTTP(ww, r)
		s.d.Log.Debug("http", "method", r.Method, "path", r.URL.Path, "status", ww.Status(), "dur", time.Since(t))
	})
}

// identify puts the request's identity in its context.
func (s *server) identify(next http.Handler) http.Handler {
	if s.d.Auth != nil {
		return s.d.Auth.Middleware(s.d.AdminToken)(next)
	}
	return adminTokenOnly(s.d.AdminToken)(next)
}

// requireIdentity answers 401 to anonymous requests and 403 to unsafe ones
// made with a session cookie but without its CSRF token.
func (s *server) requireIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := auth.FromContext(r.Context())
		if id == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edx"`)
			s.fail(w, r, service.ErrUnauthorized)
			return
		}
		if !safeMethod(r.Method) && s.d.Auth != nil && !s.d.Auth.CheckCSRF(r) {
			s.fail(w, r, fmt.Errorf("%w: a session-authenticated request must carry X-CSRF-Token", service.ErrForbidden))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func safeMethod(m string) bool { return m == "GET" || m == "HEAD" || m == "OPTIONS" }

// apiHeaders: responses are private to the requester and never sniffed;
// only the hub's own pages may frame them (the UI shows PDFs inline).
func apiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "private, no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "SAMEORIGIN")
		next.ServeHTTP(w, r)
	})
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks := s.svc.Checks(ctx)
	if s.d.Ready != nil {
		maps.Copy(checks, s.d.Ready(ctx))
	}
	out, code := map[string]string{}, http.StatusOK
	for k, err := range checks {
		out[k] = "ok"
		if err != nil {
			out[k], code = err.Error(), http.StatusServiceUnavailable
		}
	}
	writeJSON(w, code, out)
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := service.Status(err)
	msg := http.StatusText(code)
	switch {
	case code < 500:
		msg = err.Error()
	case errors.Is(err, service.ErrBusy):
		// Load shed, not a fault.
		msg = err.Error()
		w.Header().Set("Retry-After", strconv.Itoa(service.BusyRetryAfter))
		s.d.Log.Warn("http: busy", "path", r.URL.Path)
	case errors.Is(err, service.ErrPending):
		// Evidence on its way (a checkpoint, a time-stamp): not a fault.
		msg = err.Error()
		w.Header().Set("Retry-After", strconv.Itoa(pendingRetryAfter))
	default:
		s.d.Log.Error("http", "path", r.URL.Path, "err", err)
	}
	var re *auth.RetryError
	if errors.As(err, &re) {
		w.Header().Set("Retry-After", strconv.Itoa(int(re.After.Seconds())))
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

// decode reads a JSON body of at most 1 MiB, refusing unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	return nil
}

// answer writes v with code, or the error.
func (s *server) answer(w http.ResponseWriter, r *http.Request, code int, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, code, v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func identity(r *http.Request) *auth.Identity { return auth.FromContext(r.Context()) }
