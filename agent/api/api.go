// Package api is the agent's local HTTP API for the document system: send
// documents, follow them, read the inbox and report statuses. It is described
// by openapi.yaml (served at /openapi.yaml); a test holds the two together.
//
// Every /v1 route needs the bearer token. /healthz, /readyz, /metrics and
// /openapi.yaml do not: the API listens on the loopback interface by default.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// OpenAPI is the API's description.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Outbox accepts documents for sending (agent/outbox).
type Outbox interface {
	Submit(ctx context.Context, s outbox.Submission) (*spool.Record, bool, error)
	Unit() document.UnitID
	MaxSize() int64
}

// Documents are the sent documents' records (agent/spool).
type Documents interface {
	Get(ctx context.Context, id document.ID) (*spool.Record, error)
}

// Inbox is the received documents (agent/inbox).
type Inbox interface {
	List(ctx context.Context, since int64, limit int) ([]*inbox.Item, error)
	Get(ctx context.Context, id document.ID) (*inbox.Item, error)
	FilePath(ctx context.Context, id document.ID, name string) (string, inbox.File, error)
	ContainerPath(ctx context.Context, id document.ID) (string, error)
	AddStatus(ctx context.Context, st document.Status) (*inbox.Status, error)
}

// Deps are what the API serves.
type Deps struct {
	Outbox    Outbox
	Documents Documents
	Inbox     Inbox
	// Token is the bearer token of /v1. Required.
	Token string
	// Ready reports whether the agent can take documents (nil: always).
	Ready func(ctx context.Context) (map[string]string, error)
	// Metrics serves /metrics (nil: 404).
	Metrics http.Handler
	// Spooled and StatusAdded wake the senders (may be nil).
	Spooled, StatusAdded func()
	Log                  *slog.Logger
	Now                  func() time.Time
}

type server struct {
	Deps
	token [32]byte
}

// MinTokenLength is the shortest bearer token New accepts.
const MinTokenLength = 16

// New returns the API's handler.
func New(d Deps) (http.Handler, error) {
	if d.Outbox == nil || d.Documents == nil || d.Inbox == nil {
		return nil, errors.New("api: outbox, documents and inbox are required")
	}
	if len(d.Token) < MinTokenLength {
		return nil, fmt.Errorf("api: the token must be at least %d characters", MinTokenLength)
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	for _, f := range []*func(){&d.Spooled, &d.StatusAdded} {
		if *f == nil {
			*f = func() {}
		}
	}
	s := &server{Deps: d, token: sha256.Sum256([]byte(d.Token))}
	r := chi.NewRouter()
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Get("/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(OpenAPI)
	})
	if d.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", d.Metrics)
	}
	r.Route("/v1", func(r chi.Router) {
		r.Use(s.auth)
		r.Post("/documents", s.postDocument)
		r.Get("/documents/{id}", s.getDocument)
		r.Get("/inbox", s.listInbox)
		r.Get("/inbox/{id}", s.getInbox)
		r.Get("/inbox/{id}/files/*", s.getFile)
		r.Get("/inbox/{id}/container", s.getContainer)
		r.Post("/inbox/{id}/status", s.postStatus)
	})
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		s.fail(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such route"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		s.fail(w, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", msg: "method not allowed on this route"})
	})
	return r, nil
}

// auth checks the bearer token in constant time.
func (s *server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || subtle.ConstantTimeCompare(got[:], s.token[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edx-agent"`)
			s.fail(w, &apiError{status: http.StatusUnauthorized, code: "unauthorized", msg: "a valid bearer token is required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.Ready == nil {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return
	}
	detail, err := s.Ready(r.Context())
	if detail == nil {
		detail = map[string]string{}
	}
	if err != nil {
		detail["status"] = "not ready"
		detail["error"] = err.Error()
		writeJSON(w, http.StatusServiceUnavailable, detail)
		return
	}
	detail["status"] = "ready"
	writeJSON(w, http.StatusOK, detail)
}

// multipart overhead allowed beyond the container limit.
const formOverhead = 1 << 20

func (s *server) postDocument(w http.ResponseWriter, r *http.Request) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		s.fail(w, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			msg: "send multipart/form-data: a part \"metadata\" (JSON) with file parts, or a single part \"container\""})
		return
	}
	limit := s.Outbox.MaxSize() + formOverhead
	if r.ContentLength > limit {
		s.fail(w, tooLarge(limit))
		return
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	sub, err := readSubmission(multipart.NewReader(body, params["boundary"]))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, tooLarge(limit))
			return
		}
		s.fail(w, err)
		return
	}
	sub.Source = "api"
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		if len(k) > 200 {
			s.fail(w, invalid("Idempotency-Key", "longer than 200 characters"))
			return
		}
		sub.IdempotencyKey = "api:" + k
	}
	rec, created, err := s.Outbox.Submit(r.Context(), sub)
	if err != nil {
		s.fail(w, err)
		return
	}
	if created {
		s.Log.Info("document spooled", "doc_id", rec.ID, "size", rec.Size, "source", "api")
		s.Spooled()
	}
	loc := "/v1/documents/" + string(rec.ID)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": rec.ID, "state": rec.State, "duplicate": !created, "location": loc})
}

// readSubmission reads the parts of POST /v1/documents.
func readSubmission(mr *multipart.Reader) (outbox.Submission, error) {
	var sub outbox.Submission
	var p document.Problems
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return sub, err
			}
			return sub, invalid("body", "malformed multipart body: "+err.Error())
		}
		name, fileName := part.FormName(), part.FileName()
		data, err := io.ReadAll(part)
		part.Close()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return sub, err
			}
			return sub, invalid("body", "malformed multipart body: "+err.Error())
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch {
		case name == "metadata":
			if ct != "" && ct != "application/json" && ct != "text/plain" {
				return sub, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
					msg: fmt.Sprintf("the metadata part is %s; send application/json", ct)}
			}
			if sub.Meta != nil {
				p.Add("metadata", "given twice")
			}
			sub.Meta = data
		case name == "container":
			if sub.Container != nil {
				p.Add("container", "given twice")
			}
			sub.Container = data
		case fileName != "":
			if ct == "" || ct == "application/octet-stream" {
				ct = container.MediaTypeOf(fileName)
			} else {
				ct = part.Header.Get("Content-Type")
			}
			sub.Files = append(sub.Files, container.File{Name: fileName, MediaType: ct, Data: data})
		default:
			p.Add(name, "unexpected part: send \"metadata\", \"container\" or file parts with a file name")
		}
	}
	if len(p) > 0 {
		return sub, &outbox.Error{Kind: outbox.Invalid, Message: "invalid submission", Problems: p}
	}
	return sub, nil
}

func (s *server) getDocument(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	rec, err := s.Documents.Get(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// DefaultListLimit and MaxListLimit bound a page of GET /v1/inbox.
const (
	DefaultListLimit = 100
	MaxListLimit     = inbox.MaxList
)

func (s *server) listInbox(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since int64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.fail(w, invalid("since", "want a cursor from an earlier page (a non-negative integer)"))
			return
		}
		since = n
	}
	limit := DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			s.fail(w, invalid("limit", fmt.Sprintf("want 1 to %d", MaxListLimit)))
			return
		}
		limit = n
	}
	items, err := s.Inbox.List(r.Context(), since, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	next := since
	if len(items) > 0 {
		next = items[len(items)-1].Cursor
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "next_cursor": strconv.FormatInt(next, 10)})
}

func (s *server) getInbox(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	it, err := s.Inbox.Get(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, it)
}

func (s *server) getFile(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	name := chi.URLParam(r, "*")
	if r.URL.RawPath != "" {
		if n, err := url.PathUnescape(name); err == nil {
			name = n
		}
	}
	p, f, err := s.Inbox.FilePath(r.Context(), id, name)
	if err != nil {
		s.fail(w, err)
		return
	}
	serveFile(w, r, p, f.MediaType, f.Name)
}

func (s *server) getContainer(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	p, err := s.Inbox.ContainerPath(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	serveFile(w, r, p, container.Mimetype, string(id)+".asice")
}

func serveFile(w http.ResponseWriter, r *http.Request, path, mediaType, name string) {
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, "file unavailable", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "file unavailable", http.StatusInternalServerError)
		return
	}
	base := name
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[i+1:]
	}
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": base}))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// statusRequest is the body of POST /v1/inbox/{id}/status.
type statusRequest struct {
	Code        document.StatusCode `json:"code"`
	Description string              `json:"description"`
	Officer     *document.Officer   `json:"officer"`
}

func (s *server) postStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.fail(w, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", msg: "send application/json"})
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	var req statusRequest
	if err := dec.Decode(&req); err != nil {
		s.fail(w, invalid("body", "malformed JSON: "+err.Error()))
		return
	}
	st, err := s.Inbox.AddStatus(r.Context(), document.Status{
		DocumentID: id, Unit: s.Outbox.Unit(), Time: s.Now().UTC(),
		Code: req.Code, Description: req.Description, Officer: req.Officer,
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	s.Log.Info("status queued", "doc_id", id, "code", st.Code, "out_of_order", st.OutOfOrder)
	s.StatusAdded()
	writeJSON(w, http.StatusAccepted, st)
}

func (s *server) id(w http.ResponseWriter, r *http.Request) (document.ID, bool) {
	id, err := document.ParseID(chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such document: " + err.Error()})
		return "", false
	}
	return id, true
}

// apiError is an answer other than success.
type apiError struct {
	status   int
	code     string
	msg      string
	problems document.Problems
	reasons  reason.List
}

func (e *apiError) Error() string { return e.msg }

func invalid(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "invalid", msg: "invalid request",
		problems: document.Problems{{Field: field, Message: msg}}}
}

func tooLarge(limit int64) *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large",
		msg: fmt.Sprintf("the request exceeds the limit of %d bytes", limit)}
}

// errorKinds maps the errors of the packages behind the API to HTTP, in one
// place. Anything else is an internal error: logged, not shown.
func errorKinds(err error) *apiError {
	var ae *apiError
	var oe *outbox.Error
	var ps document.Problems
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &oe):
		st := map[outbox.Kind]int{outbox.Invalid: http.StatusBadRequest, outbox.TooLarge: http.StatusRequestEntityTooLarge,
			outbox.Unprocessable: http.StatusUnprocessableEntity}[oe.Kind]
		code := map[outbox.Kind]string{outbox.Invalid: "invalid", outbox.TooLarge: "too_large", outbox.Unprocessable: "unprocessable"}[oe.Kind]
		return &apiError{status: st, code: code, msg: oe.Message, problems: oe.Problems, reasons: oe.Reasons}
	case errors.As(err, &ps):
		return &apiError{status: http.StatusBadRequest, code: "invalid", msg: "invalid request", problems: ps}
	case errors.Is(err, spool.ErrNotFound), errors.Is(err, inbox.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such document"}
	case errors.Is(err, inbox.ErrGone):
		return &apiError{status: http.StatusGone, code: "gone", msg: "the document's folder was removed from the inbox"}
	case errors.Is(err, spool.ErrConflict):
		return &apiError{status: http.StatusConflict, code: "conflict", msg: "a document with this id was already submitted with other content"}
	}
	return nil
}

func (s *server) fail(w http.ResponseWriter, err error) {
	ae := errorKinds(err)
	if ae == nil {
		s.Log.Error("api: internal error", "err", err)
		ae = &apiError{status: http.StatusInternalServerError, code: "internal", msg: "internal error"}
	}
	body := map[string]any{"code": ae.code, "message": ae.msg}
	if len(ae.problems) > 0 {
		body["problems"] = ae.problems
	}
	if len(ae.reasons) > 0 {
		body["reasons"] = ae.reasons
	}
	writeJSON(w, ae.status, map[string]any{"error": body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
