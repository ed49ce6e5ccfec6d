// Package api is the hub's HTTP interface (chi): health and readiness,
// Prometheus metrics, unit administration and document downloads. Errors
// are mapped to HTTP status codes in one table (errorStatus); internal
// detail is logged, not shown.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
)

// DefaultListen is the hub's HTTP address.
const DefaultListen = "127.0.0.1:8080"

// Config configures the HTTP server.
type Config struct {
	Listen string `yaml:"listen"`
}

// Validate checks the listen address.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("http: listen %q: %w", c.Listen, err)
	}
	return nil
}

// Error kinds, mapped to HTTP status codes in errorStatus.
var (
	ErrInvalid     = errors.New("invalid")
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrForbidden   = errors.New("forbidden")
	ErrUnavailable = errors.New("unavailable")
)

func errorStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, index.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, index.ErrNotFound), errors.Is(err, archive.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, archive.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrUnavailable), errors.Is(err, archive.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Units registers units (the hub implements it).
type Units interface {
	AddUnit(ctx context.Context, req UnitRequest) (*UnitBundle, error)
}

// UnitRequest asks to register a unit.
type UnitRequest struct {
	ID      document.UnitID `json:"id"`
	Name    string          `json:"name"`
	CertPEM string          `json:"cert_pem,omitempty"` // the unit's own certificate; empty: issue one from the development CA
}

// UnitBundle is what a registered unit's agent needs.
type UnitBundle struct {
	Unit     index.Unit `json:"unit"`
	KeyPEM   string     `json:"key_pem,omitempty"` // only when the hub issued the key
	CertPEM  string     `json:"cert_pem"`
	RootsPEM string     `json:"roots_pem"`
	Creds    string     `json:"nats_creds"`
	NATSURL  string     `json:"nats_url"`
}

// Index is what the API reads from the index.
type Index interface {
	Get(ctx context.Context, id document.ID) (*index.Detail, error)
	ListUnits(ctx context.Context) ([]index.Unit, error)
	Ping(ctx context.Context) error
}

// Archive is what the API reads from the archive.
type Archive interface {
	Get(ctx context.Context, key string) ([]byte, archive.Object, error)
	Ping(ctx context.Context) error
}

// Deps are the API's collaborators.
type Deps struct {
	Index    Index
	Archive  Archive
	Units    Units
	Ready    func(ctx context.Context) error // extra readiness checks (NATS)
	Gatherer prometheus.Gatherer
	// AdminToken authorises unit administration and downloads (until
	// per-user sign-in exists).
	AdminToken string
	Log        *slog.Logger
}

// Handler returns the hub's HTTP handler.
func Handler(d Deps) http.Handler {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	s := &server{d: d}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer, s.logRequests)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	r.Get("/readyz", s.ready)
	if d.Gatherer != nil {
		r.Handle("/metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{}))
	}
	r.Route("/api/v1", func(r chi.Router) {
		r.Use(s.auth)
		r.Post("/units", s.addUnit)
		r.Get("/units", s.listUnits)
		r.Get("/documents/{id}", s.document)
		r.Get("/documents/{id}/container", s.download("container"))
		r.Get("/documents/{id}/receipt", s.download("receipt"))
	})
	return r
}

type server struct{ d Deps }

func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		t := time.Now()
		next.ServeHTTP(ww, r)
		s.d.Log.Debug("http", "method", r.Method, "path", r.URL.Path, "status", ww.Status(), "dur", time.Since(t))
	})
}

func (s *server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || s.d.AdminToken == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.d.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edx"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid bearer token is required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks := map[string]error{"index": s.d.Index.Ping(ctx), "archive": s.d.Archive.Ping(ctx)}
	if s.d.Ready != nil {
		checks["nats"] = s.d.Ready(ctx)
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
	if code < 500 {
		msg = err.Error()
	} else {
		s.d.Log.Error("http", "path", r.URL.Path, "err", err)
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

func (s *server) addUnit(w http.ResponseWriter, r *http.Request) {
	var req UnitRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, r, fmt.Errorf("%w: %v", ErrInvalid, err))
		return
	}
	b, err := s.d.Units.AddUnit(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, b)
}

func (s *server) listUnits(w http.ResponseWriter, r *http.Request) {
	us, err := s.d.Index.ListUnits(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, us)
}

func (s *server) detail(w http.ResponseWriter, r *http.Request) (*index.Detail, bool) {
	id, err := document.ParseID(chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, fmt.Errorf("%w: %v", ErrInvalid, err))
		return nil, false
	}
	d, err := s.d.Index.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	return d, true
}

func (s *server) document(w http.ResponseWriter, r *http.Request) {
	if d, ok := s.detail(w, r); ok {
		writeJSON(w, http.StatusOK, d)
	}
}

func (s *server) download(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, ok := s.detail(w, r)
		if !ok {
			return
		}
		key, ctype, name := d.ArchiveKey, "application/vnd.etsi.asic-e+zip", string(d.Doc.ID)+".asice"
		if what == "receipt" {
			key, ctype, name = d.ReceiptKey, "application/pkcs7-mime", string(d.Doc.ID)+".receipt.p7s"
		}
		b, _, err := s.d.Archive.Get(r.Context(), key)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		w.Write(b)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
