// Package service is the hub's application service: what people and tools
// may do with the hub, whichever face they come through. It holds the
// records (search, a document, its files, receipt and verification), the
// units (their pages and counters, registration and every change of their
// credentials) and the accounts (users and API tokens), applies the access
// rules of hub/auth to each operation, and returns errors of a handful of
// kinds (ErrInvalid, ErrNotFound, ...) that Status maps to HTTP status codes
// in one table.
//
// The REST API (hub/api) and the web UI (hub/web) are two thin faces on
// it: they read a request, call the service with the caller's identity and
// write what it returns. Units are read from the registry every hub shares
// (hub/registry), documents from this hub's index (hub/index, a projection
// of the archive kept complete by the decision events) and the archive.
package service

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// Error kinds. Every error the service returns is one of them (wrapped with
// what happened), or an error of the stores under it that Status knows.
var (
	ErrInvalid      = errors.New("invalid")
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrForbidden    = errors.New("forbidden")
	ErrUnauthorized = errors.New("sign-in or a valid bearer token is required")
	ErrUnavailable  = errors.New("unavailable")
)

// ErrBusy: every verification slot is taken. The faces answer 503 with
// Retry-After (BusyRetryAfter).
var ErrBusy = fmt.Errorf("%w: the hub is verifying as many containers as it may at once; try again shortly", ErrUnavailable)

// BusyRetryAfter is the Retry-After of ErrBusy, in seconds.
const BusyRetryAfter = 2

// Status is the HTTP status code of an error of the service: the one table
// both faces answer with.
func Status(err error) int {
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

// Index is what the service reads from this hub's index, and the units it
// writes there when it changes one.
type Index interface {
	Search(ctx context.Context, q index.Query) (index.Page, error)
	Get(ctx context.Context, id document.ID) (*index.Detail, error)
	UnitCounters(ctx context.Context, unit document.UnitID) (index.Counters, error)
	Overdue(ctx context.Context, unit document.UnitID, now time.Time) ([]index.Summary, error)
	PutUnit(ctx context.Context, u index.Unit) error
	Ping(ctx context.Context) error
}

// Archive is what the service reads from the archive.
type Archive interface {
	Get(ctx context.Context, key string) ([]byte, archive.Object, error)
	Open(ctx context.Context, key string) (io.ReadCloser, archive.Object, error)
	List(ctx context.Context, prefix string) iter.Seq2[archive.Object, error]
	Ping(ctx context.Context) error
}

// Registry is the unit registry every hub shares (hub/registry): the truth
// for units, which this hub's index follows a moment later. Get asks the
// bucket when this hub's view does not know the unit yet.
type Registry interface {
	Get(ctx context.Context, id document.UnitID) (registry.Unit, error)
	List() []registry.Unit
	Update(ctx context.Context, id document.UnitID, change registry.Change) (registry.Unit, error)
	Revocations(now time.Time) map[string]time.Time
}

// Deps are the service's collaborators and settings.
type Deps struct {
	Index    Index
	Archive  Archive
	Registry Registry
	// Accounts holds users, sessions and tokens; nil: the hub runs with
	// its admin token alone, and account operations are ErrUnavailable.
	Accounts *auth.Store
	// Trust is the hub's trust configuration (roots and CRLs), which
	// verification and the unit pages use.
	Trust *pki.Trust
	// Evidence reads the transparency logs (proofs, audit bundles); nil
	// on a hub without its log.
	Evidence Evidence
	// Registrar registers and changes units; nil: units are read, never
	// changed (ErrUnavailable).
	Registrar *Registrar
	// MaxVerifications bounds the verifications running at once, the
	// API's and the web UI's alike (an archived document re-verified, an
	// upload read and verified); one more is refused with ErrBusy rather
	// than queued. Zero: one per CPU.
	MaxVerifications int
	// CursorKey (32 bytes) seals the search cursors given to clients (see
	// cursor.go); when empty, a random key for the life of the process.
	CursorKey []byte
	Now       func() time.Time // time.Now when nil
	Log       *slog.Logger
}

// Service is the hub's application service. Its methods are safe for
// concurrent use.
type Service struct {
	d     Deps
	log   *slog.Logger
	slots chan struct{} // verification slots
	aead  cipher.AEAD   // seals search cursors
	// units serialises the changes of units made through this hub (the
	// registry's compare-and-set orders them across hubs).
	units sync.Mutex
}

// New checks d and returns the service.
func New(d Deps) (*Service, error) {
	if d.Index == nil || d.Archive == nil || d.Registry == nil || d.Trust == nil {
		return nil, errors.New("service: the index, the archive, the unit registry and the trust are required")
	}
	if d.MaxVerifications < 0 {
		return nil, fmt.Errorf("service: max verifications %d: want 0 (one per CPU) or more", d.MaxVerifications)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if r := d.Registrar; r != nil {
		if err := r.validate(); err != nil {
			return nil, err
		}
	}
	n := d.MaxVerifications
	if n == 0 {
		n = runtime.NumCPU()
	}
	aead, err := cursorAEAD(d.CursorKey)
	if err != nil {
		return nil, err
	}
	return &Service{d: d, log: d.Log, slots: make(chan struct{}, n), aead: aead}, nil
}

// acquire takes a verification slot, or fails with ErrBusy.
func (svc *Service) acquire() (release func(), err error) {
	select {
	case svc.slots <- struct{}{}:
		return func() { <-svc.slots }, nil
	default:
		return nil, ErrBusy
	}
}

func (svc *Service) now() time.Time { return svc.d.Now() }

// Checks are the service's readiness checks by name: the index and the
// archive answer.
func (svc *Service) Checks(ctx context.Context) map[string]error {
	return map[string]error{"index": svc.d.Index.Ping(ctx), "archive": svc.d.Archive.Ping(ctx)}
}
