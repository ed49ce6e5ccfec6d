package axis

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

var (
	secret = []byte("A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve")
	t0     = time.Date(2026, 11, 30, 20, 38, 15, 123e6, Vietnam)
)

func secrets(id string) ([]byte, bool) {
	if id == "vxp.saas.03" {
		return secret, true
	}
	return nil, false
}

func opts() VerifyOptions {
	return VerifyOptions{Secret: secrets, Now: t0.Add(time.Minute), Window: 15 * time.Minute}
}

func signed(extra ...Param) http.Header {
	ps := append([]Param{{"Content-Type", "application/json"}, {"timestamp", FormatTimestamp(t0, nil)}, {"systemid", "vxp.saas.03"}}, extra...)
	return Sign(secret, ps)
}

// TestHMACVector checks HMAC against the RFC 4231-style published vector
// for HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
func TestHMACVector(t *testing.T) {
	if got := HMAC([]byte("key"), "The quick brown fox jumps over the lazy dog"); got != "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8" {
		t.Fatal(got)
	}
}

func TestSignVerify(t *testing.T) {
	h := signed(Param{"servicetype", "eDoc"}, Param{"messagetype", "edoc"}, Param{"docId", "01JDOC"})
	if got := h.Get(SignHeaderKey); got != "Content-Type;timestamp;systemid;servicetype;messagetype;docId" {
		t.Fatalf("key %q", got)
	}
	if !strings.HasPrefix(h.Get(SignHeader), `{"XroadVnpt-Content-Type":"application/json","XroadVnpt-timestamp":"30112026T203815+0123"`) {
		t.Fatalf("sign header %s", h.Get(SignHeader))
	}
	s, err := Verify(h, opts())
	if err != nil {
		t.Fatal(err)
	}
	if s.SystemID != "vxp.saas.03" || !s.Time.Equal(t0) || s.Param("DOCID") != "01JDOC" || s.Param("messagetype") != "edoc" || s.Signature != h.Get(HashHeader) {
		t.Fatalf("%+v", s)
	}
}

// TestVerifyHashesWhatWasReceived: a sign header with unusual spacing, key
// order and escapes verifies when its hash is over the string received; a
// verifier that re-serialised the JSON would compute another hash.
func TestVerifyHashesWhatWasReceived(t *testing.T) {
	ts := FormatTimestamp(t0, nil)
	raw := "{ \"XroadVnpt-systemid\" :\t\"vxp.saas.03\",\n  \"XroadVnpt-timestamp\": \"" + ts + "\" , \"XroadVnpt-from\":\"000.01.00.H29\", \"XroadVnpt-to\":\"[\\\"000.02.00.H29\\\"]\" }"
	h := http.Header{}
	h.Set(SignHeader, raw)
	h.Set(SignHeaderKey, "timestamp; from;systemid;to")
	h.Set(HashHeader, strings.ToUpper(HMAC(secret, raw)))
	h.Set("XroadVnpt-systemid", "vxp.saas.03")
	h.Set("XroadVnpt-timestamp", ts)
	h.Set("XroadVnpt-from", "000.01.00.H29")
	h.Set("XroadVnpt-to", `["000.02.00.H29"]`)
	s, err := Verify(h, opts())
	if err != nil {
		t.Fatal(err)
	}
	if got := ParseTo(s.Param("to")); len(got) != 1 || got[0] != "000.02.00.H29" {
		t.Fatalf("to %v", got)
	}
	// The same pairs, compact, hash differently: the hash is of the bytes.
	if HMAC(secret, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+ts+`","XroadVnpt-from":"000.01.00.H29","XroadVnpt-to":"[\"000.02.00.H29\"]"}`) == HMAC(secret, raw) {
		t.Fatal("different bytes, same hash")
	}
}

func TestVerifyRefuses(t *testing.T) {
	ts := FormatTimestamp(t0, nil)
	tests := []struct {
		name   string
		change func(h http.Header)
		code   Code
		want   string
	}{
		{"no sign header", func(h http.Header) { h.Del(SignHeader) }, CodeUnauthorized, "no XroadVnpt-sign-header "},
		{"no hash", func(h http.Header) { h.Del(HashHeader) }, CodeUnauthorized, "no XroadVnpt-hash-header"},
		{"no key list", func(h http.Header) { h.Del(SignHeaderKey) }, CodeUnauthorized, "no XroadVnpt-sign-header-key"},
		{"wrong hash", func(h http.Header) { h.Set(HashHeader, strings.Repeat("0", 64)) }, CodeUnauthorized, "does not match"},
		{"tampered value", func(h http.Header) { h.Set("XroadVnpt-docId", "01JOTHER") }, CodeUnauthorized, "differs from its signed value"},
		{"value header missing", func(h http.Header) { h.Del("XroadVnpt-docId") }, CodeUnauthorized, "has no XroadVnpt-docId header"},
		{"value header twice", func(h http.Header) { h.Add("XroadVnpt-docId", "01JDOC") }, CodeUnauthorized, "given 2 times"},
		{"unlisted signed key", func(h http.Header) { h.Set(SignHeaderKey, "Content-Type;timestamp;systemid") }, CodeUnauthorized, "names 3 parameters"},
		{"listed twice", func(h http.Header) {
			h.Set(SignHeaderKey, "Content-Type;timestamp;systemid;systemid")
		}, CodeUnauthorized, "twice"},
		{"resigned with another secret", func(h http.Header) { h.Set(HashHeader, HMAC([]byte("guess"), h.Get(SignHeader))) }, CodeUnauthorized, "does not match"},
		{"unknown system", func(h http.Header) {
			resign(h, `{"XroadVnpt-timestamp":"`+ts+`","XroadVnpt-systemid":"vxp.other"}`, "timestamp;systemid", map[string]string{"systemid": "vxp.other"})
		}, CodeUnauthorized, "does not match"},
		{"no systemid", func(h http.Header) { resign(h, `{"XroadVnpt-timestamp":"`+ts+`"}`, "timestamp", nil) }, CodeUnauthorized, "no signed systemid"},
		{"no timestamp", func(h http.Header) {
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03"}`, "systemid", nil)
		}, CodeUnauthorized, "no signed timestamp"},
		{"non-string value", func(h http.Header) {
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":1}`, "systemid;timestamp", nil)
		}, CodeUnauthorized, "not a string"},
		{"duplicate key", func(h http.Header) {
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+ts+`","XroadVnpt-systemid":"vxp.saas.03"}`, "systemid;timestamp", nil)
		}, CodeUnauthorized, "given twice"},
		{"unprefixed key", func(h http.Header) {
			resign(h, `{"systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+ts+`"}`, "systemid;timestamp", nil)
		}, CodeUnauthorized, "prefix"},
		{"trailing data", func(h http.Header) {
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+ts+`"} {}`, "systemid;timestamp", nil)
		}, CodeUnauthorized, "trailing"},
		{"not JSON", func(h http.Header) { resign(h, `systemid=vxp.saas.03`, "systemid", nil) }, CodeUnauthorized, "not a JSON object"},
		{"stale", func(h http.Header) {
			old := FormatTimestamp(t0.Add(-time.Hour), nil)
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+old+`"}`, "systemid;timestamp", map[string]string{"timestamp": old})
		}, CodeStale, "more than the 15m0s allowed"},
		{"future", func(h http.Header) {
			f := FormatTimestamp(t0.Add(time.Hour), nil)
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+f+`"}`, "systemid;timestamp", map[string]string{"timestamp": f})
		}, CodeStale, "allowed"},
		{"bad timestamp", func(h http.Header) {
			resign(h, `{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"yesterday"}`, "systemid;timestamp", map[string]string{"timestamp": "yesterday"})
		}, CodeBadRequest, "timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := signed(Param{"docId", "01JDOC"})
			tt.change(h)
			_, err := Verify(h, opts())
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want code %d with %q", err, tt.code, tt.want)
			}
		})
	}
}

// resign replaces the signed set with raw (signed with the right secret),
// its key list and the headers it names.
func resign(h http.Header, raw, keys string, values map[string]string) {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "xroadvnpt-") {
			h.Del(k)
		}
	}
	h.Set(SignHeader, raw)
	h.Set(SignHeaderKey, keys)
	h.Set(HashHeader, HMAC(secret, raw))
	h.Set("XroadVnpt-systemid", "vxp.saas.03")
	h.Set("XroadVnpt-timestamp", FormatTimestamp(t0, nil))
	for k, v := range values {
		h.Set("XroadVnpt-"+k, v)
	}
}

func TestWindowZeroDoesNotCheckTime(t *testing.T) {
	o := opts()
	o.Window = 0
	o.Now = t0.AddDate(1, 0, 0)
	if _, err := Verify(signed(), o); err != nil {
		t.Fatal(err)
	}
}

func TestTimestamps(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"30112026T203815+0123", t0},
		{"01012027T000000+0000", time.Date(2027, 1, 1, 0, 0, 0, 0, Vietnam)},
		{"2026-11-30T13:38:15.123Z", t0},
	} {
		got, err := ParseTimestamp(tc.in, nil)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%s: %v %v", tc.in, got, err)
		}
	}
	for _, bad := range []string{"", "30112026T203815+9999", "30132026T203815+0000", "now"} {
		if _, err := ParseTimestamp(bad, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := FormatTimestamp(t0.UTC(), nil); got != "30112026T203815+0123" {
		t.Fatal(got)
	}
}

func TestFileHash(t *testing.T) {
	data := []byte("<edXML/>")
	sum := sha256.Sum256(data)
	plain := hex.EncodeToString(sum[:])
	sdk := FileHash(data)
	short := 0
	for _, c := range sum {
		if c < 0x10 {
			short++
		}
	}
	if len(sdk) != 64-short {
		t.Fatalf("SDK spelling %s of %s", sdk, plain)
	}
	if !FileHashMatches(sdk, data) || !FileHashMatches(strings.ToUpper(plain), data) || FileHashMatches(plain, []byte("other")) {
		t.Fatal("FileHashMatches")
	}
}

func TestParseTo(t *testing.T) {
	for in, want := range map[string]string{
		`"000.02.00.H29"`:                   "000.02.00.H29",
		`["000.02.00.H29","000.03.00.H29"]`: "000.02.00.H29|000.03.00.H29",
		`000.02.00.H29; 000.03.00.H29`:      "000.02.00.H29|000.03.00.H29",
		``:                                  "",
	} {
		if got := strings.Join(ParseTo(in), "|"); got != want {
			t.Errorf("%s: %q", in, got)
		}
	}
}
