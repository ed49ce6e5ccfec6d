package axis

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/axis"
	"github.com/edxhub/edx/pkg/document"
)

// Exchange is what the calls reach (agent/packets).
type Exchange interface {
	Unit() document.UnitID
	Submit(ctx context.Context, r io.Reader, s packets.Submission) (*packets.Result, error)
	Pending(ctx context.Context, kind string, limit int) ([]packets.Item, error)
	WriteItem(ctx context.Context, w io.Writer, itemID string) (string, error)
	HandOver(ctx context.Context, itemID, transport string) error
	Units(ctx context.Context) ([]packets.Unit, error)
	Recent(ctx context.Context, limit int) ([]*spool.Record, error)
}

// Server serves the calls.
type Server struct {
	cfg     Config
	secrets map[string][]byte
	x       Exchange
	tmp     string
	loc     *time.Location
	log     *slog.Logger
	now     func() time.Time

	// Spooled and StatusAdded wake the agent's senders (may be nil).
	Spooled, StatusAdded func()
	// Observe counts each call by name ("other" for an unknown one) and
	// answer code (may be nil).
	Observe func(call string, code axis.Code)

	mu       sync.Mutex
	seen     map[string]time.Time // signatures taken, until when they are remembered
	pruned   time.Time
	limiters map[string]*rate.Limiter
}

// maxRemembered bounds the signatures remembered: beyond it, requests are
// refused (too many) until older ones expire.
const maxRemembered = 1 << 20

// New returns the server. secrets maps each configured system id to its
// secret; tempDir holds request bodies while they are read.
func New(cfg Config, secrets map[string][]byte, x Exchange, tempDir string, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if x == nil || tempDir == "" {
		return nil, errors.New("axis: an exchange and a temporary directory are required")
	}
	for _, s := range cfg.Systems {
		if len(secrets[s.ID]) < MinSecretLength {
			return nil, fmt.Errorf("axis: system %s: the secret must be at least %d bytes", s.ID, MinSecretLength)
		}
	}
	loc, err := time.LoadLocation(cfg.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("axis: %w", err)
	}
	if err := os.MkdirAll(tempDir, 0o750); err != nil {
		return nil, fmt.Errorf("axis: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, secrets: secrets, x: x, tmp: tempDir, loc: loc, log: log, now: time.Now,
		seen: map[string]time.Time{}, limiters: map[string]*rate.Limiter{}}, nil
}

// Path is where the calls are served.
func (s *Server) Path() string { return s.cfg.Path }

// failure is an answer other than success.
type failure struct {
	code axis.Code
	msg  string
}

func (f *failure) Error() string { return f.msg }

func fail(code axis.Code, format string, a ...any) *failure {
	return &failure{code: code, msg: fmt.Sprintf(format, a...)}
}

var httpStatus = map[axis.Code]int{
	axis.CodeOK: http.StatusOK, axis.CodeUnknownCall: http.StatusNotFound, axis.CodeUnauthorized: http.StatusUnauthorized,
	axis.CodeStale: http.StatusUnauthorized, axis.CodeBadRequest: http.StatusBadRequest, axis.CodeNotFound: http.StatusNotFound,
	axis.CodeRefused: http.StatusUnprocessableEntity, axis.CodeTooLarge: http.StatusRequestEntityTooLarge,
	axis.CodeTooMany: http.StatusTooManyRequests, axis.CodeInternal: http.StatusInternalServerError, axis.CodeConflict: http.StatusConflict,
}

type handler func(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error)

func (s *Server) calls() map[string]handler {
	return map[string]handler{
		axis.CallSendEdoc:            s.sendEdoc,
		axis.CallGetReceivedEdocList: s.getReceivedEdocList,
		axis.CallGetEdoc:             s.getEdoc,
		axis.CallUpdateStatus:        s.updateStatus,
		axis.CallGetSentEdocList:     s.getSentEdocList,
		axis.CallGetAgenciesList:     s.getAgenciesList,
		axis.CallCountReceiveEdoc:    s.count(packets.KindDocument),
		axis.CallCountReceiveStatus:  s.count(packets.KindStatus),
	}
}

// ServeHTTP answers a call: the last segment of the path names it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := path.Base(r.URL.Path)
	sig, err := s.authenticate(r)
	var ans *axis.Answer
	if err == nil {
		h, ok := s.calls()[call]
		switch {
		case !ok:
			err = fail(axis.CodeUnknownCall, "unknown call %q", clip(call))
		case r.Method != http.MethodPost && (r.Method != http.MethodGet || call == axis.CallSendEdoc):
			err = fail(axis.CodeBadRequest, "%s takes POST", call)
		default:
			ans, err = h(r.Context(), w, r, sig)
		}
	}
	system := ""
	if sig != nil {
		system = sig.SystemID
	}
	observed := call
	if _, ok := s.calls()[call]; !ok {
		observed = "other"
	}
	if err != nil {
		f := s.failure(err)
		if s.Observe != nil {
			s.Observe(observed, f.code)
		}
		s.log.Info("axis call failed", "call", clip(call), "system", clip(system), "code", f.code, "err", f.msg)
		if f.code == axis.CodeTooMany {
			w.Header().Set("Retry-After", "1")
		}
		a := axis.Fail(f.code, f.msg)
		writeJSON(w, httpStatus[f.code], &a)
		return
	}
	if s.Observe != nil {
		s.Observe(observed, axis.CodeOK)
	}
	if ans == nil {
		return // streamed by the call
	}
	s.log.Debug("axis call", "call", call, "system", system, "doc_id", ans.DocID)
	writeJSON(w, http.StatusOK, ans)
}

// authenticate verifies the signature, the replay memory and the rate.
func (s *Server) authenticate(r *http.Request) (*axis.Signed, error) {
	now := s.now()
	o := axis.VerifyOptions{Secret: func(id string) ([]byte, bool) { b, ok := s.secrets[id]; return b, ok }, Now: now, Location: s.loc}
	if !s.cfg.AcceptAnyTimestamp {
		o.Window = s.cfg.TimestampWindow
	}
	sig, err := axis.Verify(r.Header, o)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cfg.AcceptAnyTimestamp {
		if now.Sub(s.pruned) > s.cfg.TimestampWindow/4 || len(s.seen) >= maxRemembered {
			for k, until := range s.seen {
				if now.After(until) {
					delete(s.seen, k)
				}
			}
			s.pruned = now
		}
		if _, dup := s.seen[sig.Signature]; dup {
			return sig, fail(axis.CodeStale, "this signature was used already: sign each request anew (a fresh timestamp)")
		}
		if len(s.seen) >= maxRemembered {
			return sig, fail(axis.CodeTooMany, "too many requests: try again later")
		}
		// Remembered as long as its timestamp is acceptable.
		s.seen[sig.Signature] = sig.Time.Add(s.cfg.TimestampWindow)
	}
	l := s.limiters[sig.SystemID]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
		s.limiters[sig.SystemID] = l
	}
	if !l.AllowN(now, 1) {
		return sig, fail(axis.CodeTooMany, "too many requests from system %s: at most %g a second", sig.SystemID, s.cfg.Rate)
	}
	return sig, nil
}

// failure maps an error to an answer; what is not the caller's fault is
// logged, not shown.
func (s *Server) failure(err error) *failure {
	var (
		f   *failure
		ae  *axis.Error
		oe  *outbox.Error
		ps  document.Problems
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &f):
		return f
	case errors.As(err, &ae):
		return &failure{code: ae.Code, msg: ae.Msg}
	case errors.As(err, &mbe):
		return fail(axis.CodeTooLarge, "the request exceeds the limit of %d bytes", s.cfg.MaxRequestBytes)
	case errors.As(err, &oe):
		code := map[outbox.Kind]axis.Code{outbox.Invalid: axis.CodeBadRequest, outbox.TooLarge: axis.CodeTooLarge,
			outbox.Unprocessable: axis.CodeRefused}[oe.Kind]
		return &failure{code: code, msg: ascii(strings.TrimPrefix(oe.Error(), "outbox: "))}
	case errors.As(err, &ps):
		return &failure{code: axis.CodeBadRequest, msg: ascii(ps.Error())}
	case errors.Is(err, spool.ErrNotFound), errors.Is(err, inbox.ErrNotFound), errors.Is(err, packets.ErrNotFound):
		return &failure{code: axis.CodeNotFound, msg: ascii(err.Error())}
	case errors.Is(err, inbox.ErrGone):
		return fail(axis.CodeNotFound, "the document's folder was removed from the inbox")
	case errors.Is(err, spool.ErrConflict):
		return fail(axis.CodeConflict, "a document with this id was already sent with other content")
	}
	s.log.Error("axis: internal error", "err", err)
	return fail(axis.CodeInternal, "internal error: try again later")
}

// ascii keeps an ErrorDesc readable in any charset: characters outside
// ASCII are written as \uXXXX.
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 {
			b.WriteRune(r)
		} else if r <= 0xffff {
			fmt.Fprintf(&b, "\\u%04x", r)
		} else {
			b.WriteRune('?')
		}
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return ascii(s)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// sendEdoc takes a packet: the body as the SDK sends it (the packet and a
// line break, labelled application/octet-stream), or a multipart part
// file_doc (or the only file part).
func (s *Server) sendEdoc(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
	if from := strings.TrimSpace(sig.Param(axis.ParamFrom)); from != "" && document.UnitID(from) != s.x.Unit() {
		return nil, fail(axis.CodeRefused, "from is %s: this agent sends for unit %s only", clip(from), s.x.Unit())
	}
	if st := sig.Param(axis.ParamServiceType); st != "" && !strings.EqualFold(st, axis.ServiceEdoc) {
		return nil, fail(axis.CodeBadRequest, "servicetype %q: want eDoc", clip(st))
	}
	if r.ContentLength > s.cfg.MaxRequestBytes {
		return nil, fail(axis.CodeTooLarge, "the request exceeds the limit of %d bytes", s.cfg.MaxRequestBytes)
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
	f, err := os.CreateTemp(s.tmp, "axis-*.edxml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := s.spill(r, body, f)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fail(axis.CodeBadRequest, "no packet: send it as the body or as the multipart part file_doc")
	}
	packet, sum, err := s.packet(f, n, sig)
	if err != nil {
		return nil, err
	}
	res, err := s.x.Submit(ctx, packet, packets.Submission{Source: "axis:" + sig.SystemID,
		IdempotencyKey: "axis:" + sig.SystemID + ":" + hex.EncodeToString(sum[:])})
	if err != nil {
		return nil, err
	}
	ans := axis.OK()
	switch {
	case res.Status != nil:
		ans.DocID = string(res.Status.DocumentID)
		s.log.Info("axis: status queued", "system", sig.SystemID, "doc_id", res.Status.DocumentID, "code", res.Status.Code)
	case res.Duplicate:
		ans.DocID = string(res.Document.ID)
		ans.ErrorDesc = "Success: sent before as " + string(res.Document.ID)
	default:
		ans.DocID = string(res.Document.ID)
		s.log.Info("axis: document spooled", "system", sig.SystemID, "doc_id", res.Document.ID, "size", res.Document.Size)
		if s.Spooled != nil {
			s.Spooled()
		}
	}
	if res.Status != nil && s.StatusAdded != nil {
		s.StatusAdded()
	}
	return &ans, nil
}

// spill writes the packet of a sendEdoc body to f and returns its size.
func (s *Server) spill(r *http.Request, body io.Reader, f *os.File) (int64, error) {
	br := bufio.NewReaderSize(body, 4096)
	boundary := ""
	if mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "multipart/form-data" {
		boundary = params["boundary"]
	} else if head, _ := br.Peek(2); string(head) == "--" {
		// A multipart body labelled otherwise: its first line names the
		// boundary.
		line, err := br.Peek(200)
		if i := bytes.Index(line, []byte("\r\n")); i > 2 {
			boundary = string(line[2:i])
		} else if err != nil && err != io.EOF {
			return 0, err
		}
	}
	if boundary == "" {
		return io.Copy(f, br)
	}
	mr := multipart.NewReader(br, boundary)
	var found int64 = -1
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return 0, err
			}
			return 0, fail(axis.CodeBadRequest, "malformed multipart body: %v", err)
		}
		if found >= 0 || (p.FormName() != axis.FileField && p.FileName() == "") {
			io.Copy(io.Discard, p)
			continue
		}
		if found, err = io.Copy(f, p); err != nil {
			return 0, err
		}
	}
	if found < 0 {
		return 0, fail(axis.CodeBadRequest, "no part %s in the multipart body", axis.FileField)
	}
	return found, nil
}

// packet returns the packet spilled to f (without the line break the SDK
// adds after a packet sent as the body) and its SHA-256, checked against
// the signed hash-file when there is one.
func (s *Server) packet(f *os.File, n int64, sig *axis.Signed) (io.Reader, [32]byte, error) {
	var zero [32]byte
	size := n
	var tail [2]byte
	if n >= 2 {
		if _, err := f.ReadAt(tail[:], n-2); err != nil {
			return nil, zero, err
		}
		if tail == [2]byte{'\r', '\n'} {
			size = n - 2
		}
	}
	hashes := func(k int64) ([32]byte, error) {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, k)); err != nil {
			return zero, err
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		return sum, nil
	}
	sum, err := hashes(size)
	if err != nil {
		return nil, zero, err
	}
	if want := sig.Param(axis.ParamFileHash); want != "" && !hashMatches(want, sum) {
		if size == n {
			return nil, zero, fail(axis.CodeUnauthorized, "hash-file does not match the packet received")
		}
		// Sent as is, ending with a line break of its own.
		if sum, err = hashes(n); err != nil {
			return nil, zero, err
		}
		if !hashMatches(want, sum) {
			return nil, zero, fail(axis.CodeUnauthorized, "hash-file does not match the packet received")
		}
		size = n
	}
	return io.NewSectionReader(f, 0, size), sum, nil
}

func hashMatches(v string, sum [32]byte) bool {
	return axis.FileHashDigestMatches(v, sum)
}

func (s *Server) kind(sig *axis.Signed) (string, error) {
	switch mt := strings.ToLower(strings.TrimSpace(sig.Param(axis.ParamMessageType))); mt {
	case "", axis.MessageEdoc:
		return packets.KindDocument, nil
	case axis.MessageStatus:
		return packets.KindStatus, nil
	default:
		return "", fail(axis.CodeBadRequest, "messagetype %q: want edoc or status", clip(mt))
	}
}

func (s *Server) items(ctx context.Context, sig *axis.Signed) ([]packets.Item, error) {
	kind, err := s.kind(sig)
	if err != nil {
		return nil, err
	}
	return s.x.Pending(ctx, kind, s.cfg.ListLimit)
}

// getReceivedEdocList lists the documents or statuses the document system
// has not taken yet.
func (s *Server) getReceivedEdocList(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
	its, err := s.items(ctx, sig)
	if err != nil {
		return nil, err
	}
	out := make([]axis.Item, 0, len(its))
	for _, it := range its {
		st := it.Transport
		if st == "" {
			st = axis.TransportInitial
		}
		desc := ""
		if it.Code != "" {
			desc = string(it.Code) + " " + it.Code.English()
		}
		t := it.Created.In(s.loc).Format(time.RFC3339)
		out = append(out, axis.Item{DocID: it.ID, ServiceType: axis.ServiceEdoc, MessageType: it.Kind, CreatedTime: t, UpdatedTime: t,
			From: string(it.From), To: string(it.To), Status: st, StatusDesc: desc})
	}
	ans := axis.OK()
	ans.Data = out
	return &ans, nil
}

func (s *Server) count(kind string) handler {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
		its, err := s.x.Pending(ctx, kind, s.cfg.ListLimit)
		if err != nil {
			return nil, err
		}
		n := len(its)
		ans := axis.OK()
		ans.Count = &n
		return &ans, nil
	}
}

// getEdoc answers with an item as a packet, in base64, streamed.
func (s *Server) getEdoc(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
	id := strings.TrimSpace(sig.Param(axis.ParamDocID))
	if id == "" {
		return nil, fail(axis.CodeBadRequest, "docId: required")
	}
	f, err := os.CreateTemp(s.tmp, "axis-out-*.edxml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := s.x.WriteItem(ctx, f, id); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	head, _ := json.Marshal(id)
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, `{"status":"OK","ErrorCode":0,"ErrorDesc":"Success","DocId":%s,"data":"`, head)
	enc := base64.NewEncoder(base64.StdEncoding, bw)
	_, err = io.Copy(enc, f)
	if err == nil {
		err = enc.Close()
	}
	if err == nil {
		_, err = bw.WriteString("\"}\n")
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.Error("axis: getEdoc cut short", "doc_id", clip(id), "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil, nil
}

// updateStatus records the document system's acknowledgement of an item.
func (s *Server) updateStatus(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
	id := strings.TrimSpace(sig.Param(axis.ParamDocID))
	st := strings.ToLower(strings.TrimSpace(sig.Param(axis.ParamStatus)))
	if id == "" || st == "" {
		return nil, fail(axis.CodeBadRequest, "docid and status: required")
	}
	switch st {
	case axis.TransportDone, axis.TransportFail, axis.TransportProcessing:
	default:
		return nil, fail(axis.CodeBadRequest, "status %q: want done, fail or processing", clip(st))
	}
	if err := s.x.HandOver(ctx, id, st); err != nil {
		return nil, err
	}
	ans := axis.OK()
	ans.DocID = id
	return &ans, nil
}

// getSentEdocList lists the documents this unit sent, one entry per
// recipient, newest first.
func (s *Server) getSentEdocList(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
	recs, err := s.x.Recent(ctx, s.cfg.ListLimit)
	if err != nil {
		return nil, err
	}
	out := []axis.SentItem{}
	for _, rec := range recs {
		sent := rec.CreatedAt
		if rec.SubmittedAt != nil {
			sent = *rec.SubmittedAt
		}
		for _, d := range rec.Recipients {
			it := axis.SentItem{ServiceType: axis.ServiceEdoc, MessageType: axis.MessageEdoc, SenderDocID: string(rec.ID), ReceiverDocID: string(rec.ID),
				FromCode: string(s.x.Unit()), ToCode: string(d.Unit), Title: rec.Subject, SentTime: sent.In(s.loc).Format(time.RFC3339),
				SendStatus: string(rec.State), SendStatusDesc: ascii(rec.Reasons.Error())}
			if d.DeliveredAt != nil {
				it.ReceivedTime = d.DeliveredAt.In(s.loc).Format(time.RFC3339)
			}
			if d.LastStatus != "" {
				it.ReceiveStatus, it.ReceiveStatusDesc = string(d.LastStatus), d.LastStatus.English()
			}
			out = append(out, it)
		}
	}
	ans := axis.OK()
	ans.Data = out
	return &ans, nil
}

// getAgenciesList lists this unit and the units it exchanged documents
// with.
func (s *Server) getAgenciesList(ctx context.Context, w http.ResponseWriter, r *http.Request, sig *axis.Signed) (*axis.Answer, error) {
	us, err := s.x.Units(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]axis.Agency, 0, len(us))
	for _, u := range us {
		a := axis.Agency{ID: string(u.ID), Code: string(u.ID), Name: u.Name}
		if p, ok := u.ID.Parent(); ok {
			a.PID = string(p)
		}
		out = append(out, a)
	}
	ans := axis.OK()
	ans.Data = out
	return &ans, nil
}
