// Package api is the hub's HTTP interface (chi): health and readiness,
// Prometheus metrics, and the REST API under /api/v1 that openapi.yaml
// describes (a test holds the two together): document search, detail,
// downloads and verification, units with their counters, users and API
// tokens. Records holds the access-checked operations, which the web UI
// (hub/web) calls too.
//
// Requests are identified by hub/auth: an API token or the admin token
// (Authorization: Bearer), or a sign-in session cookie. Unsafe requests
// made with a session cookie must carry its CSRF token (X-CSRF-Token).
// Errors are JSON {"error": "..."}, mapped to HTTP status codes in one table
// (errorStatus); internal detail is logged, not shown.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
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

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
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
	// and the web UI (Records.MaxVerifications); 0: one per CPU.
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

// Error kinds, mapped to HTTP status codes in errorStatus.
var (
	ErrInvalid      = errors.New("invalid")
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrForbidden    = errors.New("forbidden")
	ErrUnauthorized = errors.New("sign-in or a valid bearer token is required")
	ErrUnavailable  = errors.New("unavailable")
)

func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, index.ErrInvalid), errors.Is(err, auth.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnauthorized), errors.Is(err, auth.ErrCredentials):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound), errors.Is(err, index.ErrNotFound), errors.Is(err, archive.ErrNotFound), errors.Is(err, auth.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, archive.ErrConflict), errors.Is(err, auth.ErrConflict), errors.Is(err, auth.ErrLimit):
		return http.StatusConflict
	case errors.Is(err, auth.ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrUnavailable), errors.Is(err, archive.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Status returns the HTTP status code for an error of Records (for the web UI).
func Status(err error) int { return errorStatus(err) }

// Units registers units and changes their state (the hub implements it).
type Units interface {
	AddUnit(ctx context.Context, req UnitRequest) (*UnitBundle, error)
	// DisableUnit revokes the unit's NATS credentials; the hub refuses its
	// documents (sender.disabled) and documents to it (recipient.disabled).
	DisableUnit(ctx context.Context, id document.UnitID) (index.Unit, error)
	// EnableUnit allows a disabled unit again, with fresh NATS credentials
	// (the ones it had were revoked when it was disabled).
	EnableUnit(ctx context.Context, id document.UnitID) (*UnitBundle, error)
	// RotateUnit issues new NATS credentials and revokes the old ones; with
	// a certificate (given, or issued by the development CA), the unit's
	// certificate is replaced too.
	RotateUnit(ctx context.Context, id document.UnitID, req RotateRequest) (*UnitBundle, error)
}

// RotateRequest asks for a unit's new credentials.
type RotateRequest struct {
	// NewCert asks the development CA for a new key and certificate.
	NewCert bool `json:"new_cert,omitempty"`
	// CertPEM is the unit's new certificate (with its chain), from the
	// city's CA.
	CertPEM string `json:"cert_pem,omitempty"`
	// WitnessKey replaces the unit's witness key (the public half of the
	// key its agent cosigns the hub's log with, a C2SP cosignature/v1
	// verifier key named edx-witness/<unit>).
	WitnessKey string `json:"witness_key,omitempty"`
}

// UnitRequest asks to register a unit.
type UnitRequest struct {
	ID      document.UnitID `json:"id"`
	Name    string          `json:"name"`
	CertPEM string          `json:"cert_pem,omitempty"` // the unit's own certificate; empty: issue one from the development CA
	// WitnessKey is the public half of the key the unit's agent cosigns
	// the hub's log with (edx unit add makes the key beside the agent's
	// files); empty: the agent registers one itself.
	WitnessKey string `json:"witness_key,omitempty"`
}

// UnitBundle is what a registered unit's agent needs.
type UnitBundle struct {
	Unit     index.Unit `json:"unit"`
	KeyPEM   string     `json:"key_pem,omitempty"` // only when the hub issued the key
	CertPEM  string     `json:"cert_pem"`
	RootsPEM string     `json:"roots_pem"`
	Creds    string     `json:"nats_creds"`
	NATSURL  string     `json:"nats_url"`
	// LogKey is the verifier key of the hub's transparency log, which the
	// agent witnesses (checks every checkpoint against).
	LogKey string `json:"log_key,omitempty"`
	// WitnessKey is the unit's witness key in the registry.
	WitnessKey string `json:"witness_key,omitempty"`
}

// Index is what the API reads from the index.
type Index interface {
	Search(ctx context.Context, q index.Query) (index.Page, error)
	Get(ctx context.Context, id document.ID) (*index.Detail, error)
	GetUnit(ctx context.Context, id document.UnitID) (index.Unit, error)
	ListUnits(ctx context.Context) ([]index.Unit, error)
	UnitCounters(ctx context.Context, unit document.UnitID) (index.Counters, error)
	Overdue(ctx context.Context, unit document.UnitID, now time.Time) ([]index.Summary, error)
	Ping(ctx context.Context) error
}

// Archive is what the API reads from the archive.
type Archive interface {
	Get(ctx context.Context, key string) ([]byte, archive.Object, error)
	Open(ctx context.Context, key string) (io.ReadCloser, archive.Object, error)
	List(ctx context.Context, prefix string) iter.Seq2[archive.Object, error]
	Ping(ctx context.Context) error
}

// Deps are the API's collaborators.
type Deps struct {
	Records *Records
	Units   Units
	// Auth holds accounts, sessions and tokens; nil accepts the admin token
	// alone.
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
	s := &server{d: d, rec: d.Records}
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
	rec *Records
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
			s.fail(w, r, ErrUnauthorized)
			return
		}
		if !safeMethod(r.Method) && s.d.Auth != nil && !s.d.Auth.CheckCSRF(r) {
			s.fail(w, r, fmt.Errorf("%w: a session-authenticated request must carry X-CSRF-Token", ErrForbidden))
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
	checks := map[string]error{"index": s.rec.Index.Ping(ctx), "archive": s.rec.Archive.Ping(ctx)}
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
	code := errorStatus(err)
	msg := http.StatusText(code)
	switch {
	case code < 500:
		msg = err.Error()
	case errors.Is(err, ErrBusy):
		// Load shed, not a fault.
		msg = err.Error()
		w.Header().Set("Retry-After", strconv.Itoa(busyRetryAfter))
		s.d.Log.Warn("http: busy", "path", r.URL.Path)
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
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func identity(r *http.Request) *auth.Identity { return auth.FromContext(r.Context()) }
