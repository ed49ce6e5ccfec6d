package bridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edxhub/edx/pkg/axis"
	"github.com/edxhub/edx/pkg/document"
)

// Client calls an upstream axis as the national SDK does (pkg/axis): each
// call a POST to <url>/<call>, its parameters signed with the system's
// shared secret.
type Client struct {
	base   string
	system string
	secret []byte
	loc    *time.Location
	http   *http.Client

	mu   sync.Mutex
	last time.Time // the last timestamp signed: each call gets a later one
}

// NewClient returns a client of the upstream at url.
func NewClient(url, systemID string, secret []byte, loc *time.Location, timeout time.Duration) *Client {
	return &Client{base: strings.TrimRight(url, "/"), system: systemID, secret: secret, loc: loc,
		http: &http.Client{Timeout: timeout}}
}

// Error is a call that failed. Refused says the upstream answered it with a
// refusal (status FAIL, not a temporary failure): trying again will not
// help. Otherwise the call may or may not have taken effect (the
// connection broke, the upstream failed or asked to slow down), and may be
// tried again.
type Error struct {
	Call    string
	Refused bool
	HTTP    int       // the answer's HTTP status, 0 without an answer
	Code    axis.Code // the answer's ErrorCode
	Msg     string
}

func (e *Error) Error() string {
	switch {
	case e.HTTP == 0:
		return fmt.Sprintf("bridge: %s: %s", e.Call, e.Msg)
	case e.Refused:
		return fmt.Sprintf("bridge: %s refused (HTTP %d, ErrorCode %d): %s", e.Call, e.HTTP, e.Code, e.Msg)
	}
	return fmt.Sprintf("bridge: %s failed (HTTP %d, ErrorCode %d): %s", e.Call, e.HTTP, e.Code, e.Msg)
}

// Refused reports whether err is the upstream's refusal of a call.
func Refused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Refused
}

// stamp is the next timestamp: never the same twice, so that no two calls
// carry the same signature (an axis refuses a signature it saw).
func (c *Client) stamp() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if !now.After(c.last.Add(time.Millisecond - 1)) {
		now = c.last.Add(time.Millisecond)
	}
	c.last = now
	return axis.FormatTimestamp(now, c.loc)
}

// maxAnswer bounds an answer other than getEdoc's.
const maxAnswer = 64 << 20

// answer is an upstream's answer; Data stays raw.
type answer struct {
	Status    string          `json:"status"`
	ErrorCode json.Number     `json:"ErrorCode"`
	ErrorDesc string          `json:"ErrorDesc"`
	DocID     json.RawMessage `json:"DocId"`
	Data      json.RawMessage `json:"data"`
}

func (a *answer) code() axis.Code {
	n, _ := strconv.Atoi(a.ErrorCode.String())
	return axis.Code(n)
}

// docID reads DocId, a string or a number.
func (a *answer) docID() string {
	var s string
	if json.Unmarshal(a.DocID, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(a.DocID, &n) == nil {
		return n.String()
	}
	return ""
}

// request builds a signed call.
func (c *Client) request(ctx context.Context, call, ctype string, body io.Reader, size int64, params ...axis.Param) (*http.Request, error) {
	ps := append([]axis.Param{{Name: axis.ParamContentType, Value: ctype}, {Name: axis.ParamTimestamp, Value: c.stamp()},
		{Name: axis.ParamSystemID, Value: c.system}}, params...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+call, body)
	if err != nil {
		return nil, fmt.Errorf("bridge: %s: %w", call, err)
	}
	for k, v := range axis.Sign(c.secret, ps) {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = size
	}
	return req, nil
}

// do makes a call and reads its answer (at most maxAnswer bytes).
func (c *Client) do(req *http.Request, call string) (*answer, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Call: call, Msg: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, &Error{Call: call, HTTP: resp.StatusCode, Msg: "answer cut short: " + err.Error()}
	}
	if len(b) > maxAnswer {
		return nil, &Error{Call: call, HTTP: resp.StatusCode, Msg: fmt.Sprintf("answer above %d bytes", maxAnswer)}
	}
	var a answer
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		return nil, &Error{Call: call, HTTP: resp.StatusCode, Msg: fmt.Sprintf("not a JSON answer: %q", clip(string(b)))}
	}
	return &a, judge(call, resp.StatusCode, &a)
}

// judge tells a success from a refusal and a temporary failure: HTTP 429,
// 408 and 5xx, and the answers that say try again (a stale timestamp, too
// many requests, an internal error), are temporary; any other FAIL is a
// refusal.
func judge(call string, status int, a *answer) error {
	code := a.code()
	if status == http.StatusOK && strings.EqualFold(a.Status, axis.StatusOK) && code == axis.CodeOK {
		return nil
	}
	e := &Error{Call: call, HTTP: status, Code: code, Msg: clip(a.ErrorDesc)}
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
	case status == http.StatusUnauthorized:
		// A wrong secret or system id, or a clock off: the operator must
		// act, and nothing is dropped meanwhile.
	case code == axis.CodeStale || code == axis.CodeTooMany || code == axis.CodeInternal:
	default:
		e.Refused = true
	}
	return e
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// Send sends a packet (the first size bytes of packet) with sendEdoc, as the
// national SDK does: the packet and a line break as the body, labelled
// application/octet-stream, its SHA-256 signed as hash-file. to names the
// recipients the upstream routes it to; kind is axis.MessageEdoc or
// axis.MessageStatus. It returns the upstream's id of what it took.
func (c *Client) Send(ctx context.Context, from document.UnitID, to []document.UnitID, kind string, packet io.ReaderAt, size int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(packet, 0, size)); err != nil {
		return "", fmt.Errorf("bridge: %w", err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	tos := make([]string, len(to))
	for i, u := range to {
		tos[i] = string(u)
	}
	toJSON, _ := json.Marshal(tos)
	body := io.MultiReader(io.NewSectionReader(packet, 0, size), strings.NewReader("\r\n"))
	req, err := c.request(ctx, axis.CallSendEdoc, "application/octet-stream", body, size+2,
		axis.Param{Name: axis.ParamFrom, Value: string(from)}, axis.Param{Name: axis.ParamTo, Value: string(toJSON)},
		axis.Param{Name: axis.ParamServiceType, Value: axis.ServiceEdoc}, axis.Param{Name: axis.ParamMessageType, Value: kind},
		axis.Param{Name: axis.ParamFileHash, Value: axis.FileHashOf(sum)})
	if err != nil {
		return "", err
	}
	a, err := c.do(req, axis.CallSendEdoc)
	if err != nil {
		return "", err
	}
	id := a.docID()
	if id == "" {
		return "", &Error{Call: axis.CallSendEdoc, HTTP: http.StatusOK, Msg: "the answer names no DocId"}
	}
	return id, nil
}

// List returns what the upstream holds for this system: documents
// (axis.MessageEdoc) or statuses (axis.MessageStatus).
func (c *Client) List(ctx context.Context, kind string) ([]axis.Item, error) {
	req, err := c.request(ctx, axis.CallGetReceivedEdocList, "application/json", nil, 0,
		axis.Param{Name: axis.ParamServiceType, Value: axis.ServiceEdoc}, axis.Param{Name: axis.ParamMessageType, Value: kind})
	if err != nil {
		return nil, err
	}
	a, err := c.do(req, axis.CallGetReceivedEdocList)
	if err != nil {
		return nil, err
	}
	var items []axis.Item
	if len(a.Data) > 0 && string(a.Data) != "null" {
		if err := json.Unmarshal(a.Data, &items); err != nil {
			return nil, &Error{Call: axis.CallGetReceivedEdocList, HTTP: http.StatusOK, Msg: "data is not a list of items: " + err.Error()}
		}
	}
	return items, nil
}

// Sent returns what this system sent, as the upstream lists it.
func (c *Client) Sent(ctx context.Context) ([]axis.SentItem, error) {
	req, err := c.request(ctx, axis.CallGetSentEdocList, "application/json", nil, 0,
		axis.Param{Name: axis.ParamServiceType, Value: axis.ServiceEdoc})
	if err != nil {
		return nil, err
	}
	a, err := c.do(req, axis.CallGetSentEdocList)
	if err != nil {
		return nil, err
	}
	var items []axis.SentItem
	if len(a.Data) > 0 && string(a.Data) != "null" {
		if err := json.Unmarshal(a.Data, &items); err != nil {
			return nil, &Error{Call: axis.CallGetSentEdocList, HTTP: http.StatusOK, Msg: "data is not a list of sent items: " + err.Error()}
		}
	}
	return items, nil
}

// Ack acknowledges an item with updateStatus: axis.TransportDone (taken),
// TransportFail or TransportProcessing.
func (c *Client) Ack(ctx context.Context, docID, status string) error {
	req, err := c.request(ctx, axis.CallUpdateStatus, "application/json", nil, 0,
		axis.Param{Name: "docid", Value: docID}, axis.Param{Name: axis.ParamStatus, Value: status})
	if err != nil {
		return err
	}
	_, err = c.do(req, axis.CallUpdateStatus)
	return err
}

// Get fetches an item's packet with getEdoc and writes it, decoded from
// the answer's base64 data, to w: at most max bytes, in bounded memory.
func (c *Client) Get(ctx context.Context, docID string, w io.Writer, max int64) error {
	req, err := c.request(ctx, axis.CallGetEdoc, "application/json", nil, 0,
		axis.Param{Name: axis.ParamDocID, Value: docID})
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Call: axis.CallGetEdoc, Msg: err.Error()}
	}
	defer resp.Body.Close()
	a, n, err := ReadEdocAnswer(resp.Body, w, max)
	if err != nil {
		var se *SizeError
		if errors.As(err, &se) {
			return &Error{Call: axis.CallGetEdoc, HTTP: resp.StatusCode, Refused: true, Msg: err.Error()}
		}
		return &Error{Call: axis.CallGetEdoc, HTTP: resp.StatusCode, Msg: err.Error()}
	}
	if err := judge(axis.CallGetEdoc, resp.StatusCode, a); err != nil {
		return err
	}
	if n == 0 {
		return &Error{Call: axis.CallGetEdoc, HTTP: resp.StatusCode, Msg: "the answer holds no data"}
	}
	return nil
}

// SizeError is a getEdoc answer whose packet exceeds the limit.
type SizeError struct{ Max int64 }

func (e *SizeError) Error() string {
	return fmt.Sprintf("the packet exceeds the limit of %d bytes", e.Max)
}

// maxEdocAnswerField bounds the answer's fields other than data.
const maxEdocAnswerField = 64 << 10

// ReadEdocAnswer reads a getEdoc answer, a JSON object, in one pass: its
// data, a base64 string however long, is decoded into w as it comes (at
// most max bytes decoded, else a *SizeError); the other fields are read
// within small bounds (status, ErrorCode, ErrorDesc, DocId) or skipped.
// It returns the answer (without Data) and how many bytes went to w.
func ReadEdocAnswer(r io.Reader, w io.Writer, max int64) (*answer, int64, error) {
	s := &scanner{r: bufio.NewReaderSize(r, 64<<10)}
	a := &answer{}
	if b, err := s.ws(); err != nil || b != '{' {
		return nil, 0, errors.New("the answer is not a JSON object")
	}
	var n int64
	first, seenData := true, false
	for {
		b, err := s.ws()
		if err != nil {
			return nil, 0, err
		}
		if b == '}' && first {
			break
		}
		if !first {
			if b == '}' {
				break
			}
			if b != ',' {
				return nil, 0, fmt.Errorf("answer: want , or } at byte %d", s.n)
			}
			if b, err = s.ws(); err != nil {
				return nil, 0, err
			}
		}
		first = false
		if b != '"' {
			return nil, 0, fmt.Errorf("answer: want a key at byte %d", s.n)
		}
		key, err := s.str(maxEdocAnswerField)
		if err != nil {
			return nil, 0, err
		}
		if b, err = s.ws(); err != nil || b != ':' {
			return nil, 0, fmt.Errorf("answer: want : after %q", clip(key))
		}
		if b, err = s.ws(); err != nil {
			return nil, 0, err
		}
		switch {
		case key == "data" && seenData:
			return nil, 0, errors.New("answer: data given twice")
		case key == "data" && b == '"':
			seenData = true
			d := &b64sink{w: w, max: max}
			if err := s.stream(d); err != nil {
				return nil, 0, err
			}
			if err := d.close(); err != nil {
				return nil, 0, err
			}
			n = d.n
		case b == '"' && (key == "status" || key == "ErrorDesc" || key == "DocId" || key == "ErrorCode"):
			v, err := s.str(maxEdocAnswerField)
			if err != nil {
				return nil, 0, err
			}
			js, _ := json.Marshal(v)
			switch key {
			case "status":
				a.Status = v
			case "ErrorDesc":
				a.ErrorDesc = v
			case "DocId":
				a.DocID = js
			case "ErrorCode":
				a.ErrorCode = json.Number(v)
			}
		case key == "ErrorCode" || key == "DocId":
			v, err := s.scalar(b)
			if err != nil {
				return nil, 0, err
			}
			if key == "ErrorCode" {
				a.ErrorCode = json.Number(v)
			} else {
				a.DocID = json.RawMessage(v)
			}
		default:
			if err := s.skip(b, 0); err != nil {
				return nil, 0, err
			}
		}
	}
	if _, err := s.ws(); err != io.EOF {
		return nil, 0, errors.New("answer: data after the JSON object")
	}
	return a, n, nil
}

// scanner reads JSON a byte at a time.
type scanner struct {
	r *bufio.Reader
	n int64
}

func (s *scanner) byte() (byte, error) {
	b, err := s.r.ReadByte()
	if err == nil {
		s.n++
	}
	return b, err
}

// ws returns the next byte that is not white space.
func (s *scanner) ws() (byte, error) {
	for {
		b, err := s.byte()
		if err != nil {
			return 0, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b, nil
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// str reads the rest of a string (after its opening quote), at most max
// bytes.
func (s *scanner) str(max int) (string, error) {
	var buf strings.Builder
	for {
		b, err := s.byte()
		if err != nil {
			return "", unexpected(err)
		}
		switch {
		case b == '"':
			return buf.String(), nil
		case b == '\\':
			r, err := s.escape()
			if err != nil {
				return "", err
			}
			buf.WriteRune(r)
		case b < 0x20:
			return "", fmt.Errorf("answer: a control character in a string at byte %d", s.n)
		default:
			buf.WriteByte(b)
		}
		if buf.Len() > max {
			return "", fmt.Errorf("answer: a string longer than %d bytes", max)
		}
	}
}

// escape reads an escape sequence (after its backslash).
func (s *scanner) escape() (rune, error) {
	b, err := s.byte()
	if err != nil {
		return 0, unexpected(err)
	}
	switch b {
	case '"', '\\', '/':
		return rune(b), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		var h [4]byte
		for i := range h {
			if h[i], err = s.byte(); err != nil {
				return 0, unexpected(err)
			}
		}
		v, err := strconv.ParseUint(string(h[:]), 16, 16)
		if err != nil {
			return 0, fmt.Errorf("answer: bad \\u escape at byte %d", s.n)
		}
		return rune(v), nil
	}
	return 0, fmt.Errorf("answer: bad escape \\%c at byte %d", b, s.n)
}

// stream passes the rest of a string (after its opening quote) to d, its
// escapes resolved.
func (s *scanner) stream(d *b64sink) error {
	for {
		b, err := s.byte()
		if err != nil {
			return unexpected(err)
		}
		switch {
		case b == '"':
			return nil
		case b == '\\':
			r, err := s.escape()
			if err != nil {
				return err
			}
			if r >= 0x80 {
				return fmt.Errorf("answer: data holds %q, not base64", r)
			}
			b = byte(r)
		case b < 0x20:
			return fmt.Errorf("answer: a control character in data at byte %d", s.n)
		}
		if err := d.put(b); err != nil {
			return err
		}
	}
}

// scalar reads a number, true, false or null starting with b.
func (s *scanner) scalar(b byte) (string, error) {
	var buf []byte
	buf = append(buf, b)
	for {
		c, err := s.r.Peek(1)
		if err != nil || !strings.ContainsRune("+-.0123456789eEtruefalsn", rune(c[0])) {
			break
		}
		s.byte()
		buf = append(buf, c[0])
		if len(buf) > 64 {
			return "", errors.New("answer: a scalar too long")
		}
	}
	v := string(buf)
	if v == "true" || v == "false" || v == "null" {
		return v, nil
	}
	if _, err := strconv.ParseFloat(v, 64); err != nil {
		return "", fmt.Errorf("answer: %q is not a JSON value", clip(v))
	}
	return v, nil
}

// maxDepth bounds the nesting of a skipped value.
const maxDepth = 64

// skip reads past a value starting with b.
func (s *scanner) skip(b byte, depth int) error {
	switch b {
	case '"':
		for {
			c, err := s.byte()
			if err != nil {
				return unexpected(err)
			}
			if c == '"' {
				return nil
			}
			if c == '\\' {
				if _, err := s.escape(); err != nil {
					return err
				}
			}
		}
	case '{', '[':
		if depth >= maxDepth {
			return errors.New("answer: nested too deep")
		}
		end := byte('}')
		if b == '[' {
			end = ']'
		}
		first := true
		for {
			c, err := s.ws()
			if err != nil {
				return unexpected(err)
			}
			if c == end && first {
				return nil
			}
			if !first {
				if c == end {
					return nil
				}
				if c != ',' {
					return fmt.Errorf("answer: want , at byte %d", s.n)
				}
				if c, err = s.ws(); err != nil {
					return unexpected(err)
				}
			}
			first = false
			if end == '}' {
				if c != '"' {
					return fmt.Errorf("answer: want a key at byte %d", s.n)
				}
				if err := s.skip('"', depth+1); err != nil {
					return err
				}
				if c, err = s.ws(); err != nil || c != ':' {
					return fmt.Errorf("answer: want : at byte %d", s.n)
				}
				if c, err = s.ws(); err != nil {
					return unexpected(err)
				}
			}
			if err := s.skip(c, depth+1); err != nil {
				return err
			}
		}
	}
	_, err := s.scalar(b)
	return err
}

// b64sink decodes base64 as it comes (white space ignored) into w.
type b64sink struct {
	w   io.Writer
	max int64
	n   int64
	buf []byte
	out []byte
	end bool // padding seen: nothing may follow
}

const b64chunk = 64 << 10 // a multiple of 4

func (d *b64sink) put(c byte) error {
	switch {
	case c == ' ' || c == '\n' || c == '\r' || c == '\t':
		return nil
	case d.end && c != '=':
		return errors.New("answer: data goes on after its base64 padding")
	case c == '=':
		d.end = true
	case !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/'):
		return fmt.Errorf("answer: data holds %q, not base64", c)
	}
	d.buf = append(d.buf, c)
	if len(d.buf) == b64chunk {
		return d.flush(base64.StdEncoding)
	}
	return nil
}

func (d *b64sink) flush(enc *base64.Encoding) error {
	if d.out == nil {
		d.out = make([]byte, base64.StdEncoding.DecodedLen(b64chunk))
	}
	k, err := enc.Decode(d.out, d.buf)
	if err != nil {
		return fmt.Errorf("answer: data is not valid base64: %w", err)
	}
	d.n += int64(k)
	if d.n > d.max {
		return &SizeError{Max: d.max}
	}
	d.buf = d.buf[:0]
	if _, err := d.w.Write(d.out[:k]); err != nil {
		return err
	}
	return nil
}

func (d *b64sink) close() error {
	if len(d.buf) == 0 {
		return nil
	}
	if len(d.buf)%4 != 0 {
		// Without its padding (some encoders leave it out).
		if d.end {
			return errors.New("answer: data is not valid base64: bad padding")
		}
		return d.flush(base64.RawStdEncoding)
	}
	return d.flush(base64.StdEncoding)
}
