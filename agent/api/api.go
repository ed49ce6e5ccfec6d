// Package api is the agent's local HTTP API for the document system: send
// documents, follow them, read the inbox and report statuses. It is described
// by openapi.yaml (served at /openapi.yaml); a test holds the two together.
//
// Every /v1 route needs the bearer token. /healthz, /readyz, /metrics and
// /openapi.yaml do not: the API listens on the loopback interface by default.
//
// A document system speaking edXML sends packets where others send JSON
// (POST /v1/documents and POST /v1/inbox/{id}/status take application/xml)
// and reads documents and statuses as packets (GET /v1/inbox/{id}/edxml,
// GET /v1/documents/{id}/statuses/{seq}/edxml). The national axis's client
// protocol (agent/axis), when configured, is served under its own path,
// with its own authentication.
package api

import (
	"bytes"
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
	"github.com/edxhub/edx/agent/packets"
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
	// StatusSignature is the reporting unit's signature over a status of
	// a sent document's history (spool.ErrNotFound when it is unsigned).
	StatusSignature(ctx context.Context, id document.ID, seq int64) ([]byte, error)
}

// Inbox is the received documents (agent/inbox).
type Inbox interface {
	List(ctx context.Context, since int64, limit int) ([]*inbox.Item, error)
	Get(ctx context.Context, id document.ID) (*inbox.Item, error)
	FilePath(ctx context.Context, id document.ID, name string) (string, inbox.File, error)
	ContainerPath(ctx context.Context, id document.ID) (string, error)
	AddStatus(ctx context.Context, st document.Status) (*inbox.Status, error)
	WritePacketOf(ctx context.Context, w io.Writer, id document.ID) error
}

// Packets takes and gives edXML packets (agent/packets).
type Packets interface {
	SubmitDocument(ctx context.Context, r io.Reader, s packets.Submission) (*spool.Record, bool, error)
	SubmitStatus(ctx context.Context, r io.Reader, about document.ID) (*inbox.Status, error)
	SubmitTakeBack(ctx context.Context, r io.Reader, about document.ID) (*inbox.Status, error)
	TakeBack(ctx context.Context, id document.ID, description string, officer *document.Officer) (*inbox.Status, error)
	WriteSentStatus(ctx context.Context, w io.Writer, id document.ID, seq int64) error
}

// Deps are what the API serves.
type Deps struct {
	Outbox    Outbox
	Documents Documents
	Inbox     Inbox
	// Packets serves edXML (nil: the edXML routes answer 501).
	Packets Packets
	// Axis serves the national axis's client protocol under AxisPath
	// (POST and GET AxisPath/{call}); nil: not served.
	Axis     http.Handler
	AxisPath string
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
		r.Post("/documents/{id}/status", s.postSenderStatus)
		r.Get("/documents/{id}/statuses/{seq}/edxml", s.getSentStatusPacket)
		r.Get("/documents/{id}/statuses/{seq}/signature", s.getStatusSignature)
		r.Get("/inbox", s.listInbox)
		r.Get("/inbox/{id}", s.getInbox)
		r.Get("/inbox/{id}/files/*", s.getFile)
		r.Get("/inbox/{id}/container", s.getContainer)
		r.Get("/inbox/{id}/edxml", s.getPacket)
		r.Post("/inbox/{id}/status", s.postStatus)
	})
	if d.Axis != nil {
		if !strings.HasPrefix(d.AxisPath, "/") || strings.HasSuffix(d.AxisPath, "/") || strings.HasPrefix(d.AxisPath, "/v1") {
			return nil, fmt.Errorf("api: axis path %q: want /name, outside /v1", d.AxisPath)
		}
		r.Post(d.AxisPath+"/{call}", d.Axis.ServeHTTP)
		r.Get(d.AxisPath+"/{call}", d.Axis.ServeHTTP)
	}
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

// isXML reports whether a Content-Type is an XML one: an edXML packet.
func isXML(ctype string) bool {
	mt, _, _ := mime.ParseMediaType(ctype)
	return mt == "application/xml" || mt == "text/xml"
}

func (s *server) postDocument(w http.ResponseWriter, r *http.Request) {
	ctype := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ctype)
	xml := isXML(ctype)
	if !xml && (err != nil || mt != "multipart/form-data" || params["boundary"] == "") {
		s.fail(w, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
			msg: "send multipart/form-data (a part \"metadata\" (JSON) with file parts, a single part \"container\", or a single .edxml file part), or an edXML packet as application/xml"})
		return
	}
	limit := s.Outbox.MaxSize() + formOverhead
	if r.ContentLength > limit {
		s.fail(w, tooLarge(limit))
		return
	}
	idem := ""
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		if len(k) > 200 {
			s.fail(w, invalid("Idempotency-Key", "longer than 200 characters"))
			return
		}
		idem = "api:" + k
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	var (
		rec     *spool.Record
		created bool
	)
	if xml {
		rec, created, err = s.submitPacket(r.Context(), body, idem)
	} else {
		var sub submission
		sub, err = readSubmission(multipart.NewReader(body, params["boundary"]))
		switch {
		case err != nil:
		case sub.Packet != nil:
			rec, created, err = s.submitPacket(r.Context(), bytes.NewReader(sub.Packet), idem)
		default:
			sub.Source, sub.IdempotencyKey = "api", idem
			rec, created, err = s.Outbox.Submit(r.Context(), sub.Submission)
		}
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, tooLarge(limit))
			return
		}
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

// submitPacket sends an edXML packet.
func (s *server) submitPacket(ctx context.Context, r io.Reader, idem string) (*spool.Record, bool, error) {
	if s.Packets == nil {
		return nil, false, notImplemented()
	}
	return s.Packets.SubmitDocument(ctx, r, packets.Submission{Source: "api", IdempotencyKey: idem})
}

func notImplemented() *apiError {
	return &apiError{status: http.StatusNotImplemented, code: "not_implemented", msg: "this agent does not take edXML"}
}

// submission is what POST /v1/documents holds: a submission, or an edXML
// packet sent as a file part.
type submission struct {
	outbox.Submission
	Packet []byte
}

// readSubmission reads the parts of POST /v1/documents.
func readSubmission(mr *multipart.Reader) (submission, error) {
	var sub submission
	var p document.Problems
	parts := 0
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
		parts++
		switch {
		case strings.HasSuffix(strings.ToLower(fileName), ".edxml"):
			if sub.Packet != nil {
				p.Add(name, "a second edXML packet: send one document at a time")
			}
			sub.Packet = data
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
	if sub.Packet != nil && parts > 1 {
		p.Add("body", "an edXML packet (a .edxml file part) comes alone: it holds the document's metadata and files")
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

func (s *server) getPacket(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	s.writeXML(w, string(id)+".edxml", func(out io.Writer) error { return s.Inbox.WritePacketOf(r.Context(), out, id) })
}

func (s *server) getSentStatusPacket(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	seq, err := strconv.ParseInt(chi.URLParam(r, "seq"), 10, 64)
	if err != nil || seq <= 0 {
		s.fail(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such status: want the seq of a status in the document's history"})
		return
	}
	if s.Packets == nil {
		s.fail(w, notImplemented())
		return
	}
	s.writeXML(w, fmt.Sprintf("%s-status-%d.edxml", id, seq), func(out io.Writer) error { return s.Packets.WriteSentStatus(r.Context(), out, id, seq) })
}

// getStatusSignature answers with a recipient's signature over its status
// on a sent document (container.SignStatus: an attached DER CMS that
// openssl cms -verify reads alone), as the hub passed it on.
func (s *server) getStatusSignature(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	seq, err := strconv.ParseInt(chi.URLParam(r, "seq"), 10, 64)
	if err != nil || seq <= 0 {
		s.fail(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such status: want the seq of a status in the document's history"})
		return
	}
	b, err := s.Documents.StatusSignature(r.Context(), id, seq)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=signed-data")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fmt.Sprintf("%s-status-%d.p7s", id, seq)}))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// writeXML answers with a packet that write streams. A failure before the
// first byte is an error answer; after it, the connection is cut, so that
// the client never takes a truncated packet for a whole one.
func (s *server) writeXML(w http.ResponseWriter, name string, write func(io.Writer) error) {
	cw := &committer{w: w, header: func() {
		w.Header().Set("Content-Type", "application/xml; charset=utf-8")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
		w.Header().Set("X-Content-Type-Options", "nosniff")
	}}
	err := write(cw)
	if err == nil {
		err = cw.flush()
	}
	if err == nil {
		return
	}
	if !cw.committed {
		s.fail(w, err)
		return
	}
	s.Log.Error("api: packet cut short", "name", name, "err", err)
	panic(http.ErrAbortHandler)
}

// committer buffers the first bytes of an answer, and sets its headers
// when it commits to it.
type committer struct {
	w         http.ResponseWriter
	header    func()
	buf       []byte
	committed bool
}

func (c *committer) Write(p []byte) (int, error) {
	if !c.committed && len(c.buf)+len(p) <= 64<<10 {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

func (c *committer) flush() error {
	if !c.committed {
		c.committed = true
		c.header()
		c.w.WriteHeader(http.StatusOK)
	}
	if len(c.buf) > 0 {
		b := c.buf
		c.buf = nil
		if _, err := c.w.Write(b); err != nil {
			return err
		}
	}
	return nil
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
	var (
		st  *inbox.Status
		err error
	)
	if isXML(r.Header.Get("Content-Type")) {
		if s.Packets == nil {
			s.fail(w, notImplemented())
			return
		}
		st, err = s.Packets.SubmitStatus(r.Context(), http.MaxBytesReader(w, r.Body, packets.MaxStatusPacket), id)
	} else {
		req, ok := s.statusRequest(w, r)
		if !ok {
			return
		}
		st, err = s.Inbox.AddStatus(r.Context(), document.Status{
			DocumentID: id, Unit: s.Outbox.Unit(), Time: s.Now().UTC(),
			Code: req.Code, Description: req.Description, Officer: req.Officer,
		})
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	s.Log.Info("status queued", "doc_id", id, "code", st.Code, "out_of_order", st.OutOfOrder)
	s.StatusAdded()
	writeJSON(w, http.StatusAccepted, st)
}

// statusRequest reads a JSON status.
func (s *server) statusRequest(w http.ResponseWriter, r *http.Request) (*statusRequest, bool) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.fail(w, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", msg: "send application/json, or an edXML status packet as application/xml"})
		return nil, false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	var req statusRequest
	if err := dec.Decode(&req); err != nil {
		s.fail(w, invalid("body", "malformed JSON: "+err.Error()))
		return nil, false
	}
	return &req, true
}

// postSenderStatus takes the sender's own status on a document it sent: 13,
// it takes the document back.
func (s *server) postSenderStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := s.id(w, r)
	if !ok {
		return
	}
	if s.Packets == nil {
		s.fail(w, notImplemented())
		return
	}
	var (
		st  *inbox.Status
		err error
	)
	if isXML(r.Header.Get("Content-Type")) {
		st, err = s.Packets.SubmitTakeBack(r.Context(), http.MaxBytesReader(w, r.Body, packets.MaxStatusPacket), id)
	} else {
		req, ok := s.statusRequest(w, r)
		if !ok {
			return
		}
		if req.Code != document.StatusCancelled {
			s.fail(w, invalid("code", "the sender of a document reports 13 (it takes the document back); recipients report on /v1/inbox/{id}/status"))
			return
		}
		st, err = s.Packets.TakeBack(r.Context(), id, req.Description, req.Officer)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	s.Log.Info("take-back queued", "doc_id", id)
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
	case errors.Is(err, spool.ErrNotFound), errors.Is(err, inbox.ErrNotFound), errors.Is(err, packets.ErrNotFound):
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
