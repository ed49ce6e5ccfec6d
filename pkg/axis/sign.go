package axis

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Param is one signed parameter of a call.
type Param struct{ Name, Value string }

// Vietnam is the time zone the SDK's timestamps are written in (Indochina
// Time, UTC+7, no daylight saving time).
var Vietnam = time.FixedZone("ICT", 7*3600)

// FormatTimestamp writes t as the SDK does: ddMMyyyy'T'HHmmss+SSSS in loc
// (SSSS: the milliseconds on four digits, not a zone).
func FormatTimestamp(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = Vietnam
	}
	t = t.In(loc)
	return t.Format("02012006T150405") + fmt.Sprintf("+%04d", t.Nanosecond()/1e6)
}

// ParseTimestamp reads a timestamp parameter: the SDK's
// ddMMyyyy'T'HHmmss+SSSS in loc, or RFC 3339.
func ParseTimestamp(s string, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = Vietnam
	}
	s = strings.TrimSpace(s)
	if len(s) == 20 && s[8] == 'T' && s[15] == '+' {
		t, err := time.ParseInLocation("02012006T150405", s[:15], loc)
		if err == nil {
			ms, merr := strconv.Atoi(s[16:])
			if merr == nil && ms >= 0 && ms < 1000 {
				return t.Add(time.Duration(ms) * time.Millisecond), nil
			}
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("timestamp %q: want ddMMyyyy'T'HHmmss+SSSS or RFC 3339", clip(s))
}

// Sign returns the headers of a call signed with secret: each parameter as
// XroadVnpt-<name> (Content-Type also plain), the sign header (a compact
// JSON object, keys in the order given), its key list and its HMAC. params
// should hold systemid and timestamp.
func Sign(secret []byte, params []Param) http.Header {
	h := http.Header{}
	var js bytes.Buffer
	var names []string
	js.WriteByte('{')
	for i, p := range params {
		if i > 0 {
			js.WriteByte(',')
		}
		js.Write(jsonString(Prefix + p.Name))
		js.WriteByte(':')
		js.Write(jsonString(p.Value))
		names = append(names, p.Name)
		h.Set(Prefix+p.Name, p.Value)
		if strings.EqualFold(p.Name, ParamContentType) {
			h.Set("Content-Type", p.Value)
		}
	}
	js.WriteByte('}')
	h.Set(SignHeaderKey, strings.Join(names, ";"))
	h.Set(SignHeader, js.String())
	h.Set(HashHeader, HMAC(secret, js.String()))
	h.Set(VersionHeader, Version)
	return h
}

func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return bytes.TrimRight(b.Bytes(), "\n")
}

// HMAC is the hash header of a sign header: hex HMAC-SHA256 keyed with the
// secret, over the sign header's bytes as sent.
func HMAC(secret []byte, signHeader string) string {
	m := hmac.New(sha256.New, secret)
	io.WriteString(m, signHeader)
	return hex.EncodeToString(m.Sum(nil))
}

// FileHash is the SDK's hash-file of data: SHA-256 in lower-case hex
// without the leading zero of each byte below 0x10.
func FileHash(data []byte) string { return sdkHex(sha256.Sum256(data)) }

// FileHashOf is FileHash of data whose SHA-256 is sum.
func FileHashOf(sum [32]byte) string { return sdkHex(sum) }

func sdkHex(sum [32]byte) string {
	var b strings.Builder
	for _, c := range sum {
		b.WriteString(strconv.FormatUint(uint64(c), 16))
	}
	return b.String()
}

// FileHashMatches reports whether v, a hash-file parameter, is the SHA-256
// of data: in the SDK's spelling (FileHash) or plain hex.
func FileHashMatches(v string, data []byte) bool {
	return FileHashDigestMatches(v, sha256.Sum256(data))
}

// FileHashDigestMatches is FileHashMatches for a digest already computed.
func FileHashDigestMatches(v string, sum [32]byte) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	return hmac.Equal([]byte(v), []byte(sdkHex(sum))) || hmac.Equal([]byte(v), []byte(hex.EncodeToString(sum[:])))
}

// Error is a request that does not authenticate, with the answer's code.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return "axis: " + e.Msg }

func authErr(format string, a ...any) *Error {
	return &Error{Code: CodeUnauthorized, Msg: fmt.Sprintf(format, a...)}
}

// Signed is a request whose signature verified: its signed parameters.
type Signed struct {
	SystemID  string
	Time      time.Time // the timestamp parameter
	Signature string    // the hash header, lower case: what a replay repeats
	params    map[string]string
}

// Param returns a signed parameter by name, whatever its case ("" when
// absent): only what the signature covers is read.
func (s *Signed) Param(name string) string { return s.params[strings.ToLower(name)] }

// Has reports whether a parameter was signed.
func (s *Signed) Has(name string) bool {
	_, ok := s.params[strings.ToLower(name)]
	return ok
}

// VerifyOptions say what Verify trusts.
type VerifyOptions struct {
	// Secret returns a system's shared secret. Required.
	Secret func(systemID string) ([]byte, bool)
	// Now is the verifier's time (zero: time.Now()).
	Now time.Time
	// Window bounds how far the timestamp may be from Now, either way;
	// zero does not check it.
	Window time.Duration
	// Location is the zone of SDK timestamps (nil: Vietnam).
	Location *time.Location
}

// Limits on the authentication headers.
const (
	MaxSignHeader = 16 << 10
	MaxParams     = 64
)

// Verify checks a request's authentication: the key list names every
// parameter of the sign header (XroadVnpt-<name> keys, string values, each
// once), each named parameter's own header repeats its signed value,
// systemid and timestamp are among them, the hash header is the HMAC of the
// sign header exactly as received under the system's secret, and the
// timestamp is within the window. Failures are *Error.
func Verify(h http.Header, o VerifyOptions) (*Signed, error) {
	raw, err := single(h, SignHeader)
	if err != nil {
		return nil, err
	}
	hash, err := single(h, HashHeader)
	if err != nil {
		return nil, err
	}
	keys, err := single(h, SignHeaderKey)
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxSignHeader {
		return nil, authErr("%s is longer than %d bytes", SignHeader, MaxSignHeader)
	}
	signed, err := parseSignHeader(raw)
	if err != nil {
		return nil, err
	}
	listed := map[string]string{} // lower-case name → name as listed
	for _, n := range strings.Split(keys, ";") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, dup := listed[strings.ToLower(n)]; dup {
			return nil, authErr("%s names %q twice", SignHeaderKey, n)
		}
		listed[strings.ToLower(n)] = n
	}
	if len(listed) != len(signed) {
		return nil, authErr("%s names %d parameters, %s holds %d", SignHeaderKey, len(listed), SignHeader, len(signed))
	}
	s := &Signed{params: map[string]string{}}
	for _, n := range listed {
		v, ok := signed[Prefix+n]
		if !ok {
			return nil, authErr("%s names %q, which %s does not hold", SignHeaderKey, n, SignHeader)
		}
		hv := h.Values(Prefix + n)
		switch {
		case len(hv) == 0:
			return nil, authErr("the signed parameter %q has no %s%s header", n, Prefix, n)
		case len(hv) > 1:
			return nil, authErr("the header %s%s is given %d times", Prefix, n, len(hv))
		case strings.TrimSpace(hv[0]) != strings.TrimSpace(v):
			return nil, authErr("the header %s%s differs from its signed value", Prefix, n)
		}
		s.params[strings.ToLower(n)] = v
	}
	s.SystemID = strings.TrimSpace(s.Param(ParamSystemID))
	if s.SystemID == "" {
		return nil, authErr("no signed systemid")
	}
	if !s.Has(ParamTimestamp) {
		return nil, authErr("no signed timestamp")
	}
	if o.Secret == nil {
		return nil, errors.New("axis: verify: no secrets")
	}
	secret, known := o.Secret(s.SystemID)
	want := HMAC(secret, raw) // computed for unknown systems too: no timing difference
	got := strings.ToLower(strings.TrimSpace(hash))
	if !hmac.Equal([]byte(got), []byte(want)) || !known {
		return nil, authErr("the hash header does not match the sign header for system %q", clip(s.SystemID))
	}
	s.Signature = got
	if s.Time, err = ParseTimestamp(s.Param(ParamTimestamp), o.Location); err != nil {
		return nil, &Error{Code: CodeBadRequest, Msg: err.Error()}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	if o.Window > 0 {
		if d := now.Sub(s.Time); d > o.Window || -d > o.Window {
			return nil, &Error{Code: CodeStale, Msg: fmt.Sprintf("the timestamp is %s from the agent's clock, more than the %s allowed", d.Round(time.Second), o.Window)}
		}
	}
	return s, nil
}

func single(h http.Header, name string) (string, error) {
	v := h.Values(name)
	switch len(v) {
	case 0:
		return "", authErr("no %s header", name)
	case 1:
		return v[0], nil
	}
	return "", authErr("the header %s is given %d times", name, len(v))
}

// parseSignHeader reads the sign header: a JSON object of string values,
// each key once, each key XroadVnpt-prefixed.
func parseSignHeader(raw string) (map[string]string, error) {
	dec := json.NewDecoder(strings.NewReader(raw))
	bad := func(why string) error { return authErr("%s is not a JSON object of strings: %s", SignHeader, why) }
	t, err := dec.Token()
	if err != nil || t != json.Delim('{') {
		return nil, bad("no object")
	}
	out := map[string]string{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, bad(err.Error())
		}
		k, _ := kt.(string)
		vt, err := dec.Token()
		if err != nil {
			return nil, bad(err.Error())
		}
		v, ok := vt.(string)
		if !ok {
			return nil, bad(fmt.Sprintf("the value of %q is not a string", clip(k)))
		}
		if _, dup := out[k]; dup {
			return nil, bad(fmt.Sprintf("%q given twice", clip(k)))
		}
		if !strings.HasPrefix(k, Prefix) || len(k) == len(Prefix) {
			return nil, bad(fmt.Sprintf("the key %q lacks the %s prefix", clip(k), Prefix))
		}
		if len(out) == MaxParams {
			return nil, bad(fmt.Sprintf("more than %d parameters", MaxParams))
		}
		out[k] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, bad("unterminated")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("trailing data")
	}
	return out, nil
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
