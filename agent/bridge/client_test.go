package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestReadEdocAnswer(t *testing.T) {
	packet := []byte(strings.Repeat("<edXML>Công văn số 12/BNV-VP</edXML>\n", 5000)) // over one chunk of base64
	b64 := base64.StdEncoding.EncodeToString(packet)
	escaped := strings.ReplaceAll(b64, "/", `\/`)
	wrapped := ""
	for i := 0; i < len(b64); i += 76 {
		wrapped += b64[i:min(i+76, len(b64))] + `\r\n`
	}
	for _, c := range []struct {
		name, answer string
		want         []byte
		status, id   string
		err          string
	}{
		{name: "as the agent writes it", answer: `{"status":"OK","ErrorCode":0,"ErrorDesc":"Success","DocId":"d-1","data":"` + b64 + `"}`, want: packet, status: "OK", id: "d-1"},
		{name: "slashes escaped, data first", answer: `{"data":"` + escaped + `", "status" : "OK" , "ErrorCode":"0","DocId":42}`, want: packet, status: "OK", id: "42"},
		{name: "lines of 76", answer: `{"status":"OK","ErrorCode":0,"data":"` + wrapped + `"}`, want: packet, status: "OK"},
		{name: "without padding", answer: `{"status":"OK","ErrorCode":0,"data":"` + strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("ab")), "=") + `"}`, want: []byte("ab"), status: "OK"},
		{name: "fields skipped", answer: `{"status":"OK","ErrorCode":0,"extra":{"a":[1,2,{"b":null}],"c":"\u0111"},"ok":true,"data":"` + b64 + `"}`, want: packet, status: "OK"},
		{name: "a failure", answer: `{"status":"FAIL","ErrorCode":5,"ErrorDesc":"Kh\u00f4ng t\u00ecm th\u1ea5y"}`, status: "FAIL"},
		{name: "too large", answer: `{"data":"` + b64 + `"}`, err: "exceeds the limit"},
		{name: "not base64", answer: `{"data":"abc$"}`, err: "not base64"},
		{name: "data after padding", answer: `{"data":"YQ==YQ=="}`, err: "padding"},
		{name: "cut short", answer: `{"status":"OK","data":"` + b64[:1000], err: "unexpected EOF"},
		{name: "not an object", answer: `["data"]`, err: "not a JSON object"},
		{name: "trailing data", answer: `{"data":"YQ=="} {}`, err: "after the JSON object"},
		{name: "deep", answer: `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, err: "too deep"},
		{name: "long field", answer: `{"ErrorDesc":"` + strings.Repeat("x", 70<<10) + `"}`, err: "longer than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			max := int64(len(packet))
			if c.name == "too large" {
				max = 1000
			}
			a, n, err := ReadEdocAnswer(strings.NewReader(c.answer), &out, max)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				if c.name == "too large" {
					var se *SizeError
					if !errors.As(err, &se) {
						t.Fatalf("%T", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), c.want) || n != int64(len(c.want)) || a.Status != c.status || a.docID() != c.id {
				t.Fatalf("got %d bytes (n %d), status %q, id %q", out.Len(), n, a.Status, a.docID())
			}
		})
	}
}

// FuzzReadEdocAnswer: the streaming reader of getEdoc's answer never
// panics, never writes more than its limit, and reads what encoding/json
// and encoding/base64 read from a valid answer.
func FuzzReadEdocAnswer(f *testing.F) {
	for _, s := range []string{
		`{"status":"OK","ErrorCode":0,"ErrorDesc":"Success","DocId":"d-1","data":"PGVkWE1MLz4="}`,
		`{"data":"PGVk\/WE1MLz4=","status":"OK","ErrorCode":"0"}`,
		`{"data":"PGVkWE1M\r\nLz4"}`,
		`{"x":[{"y":"\u0111"},true,null,-1.5e3],"data":""}`,
		`{"status":"FAIL","ErrorCode":5}`,
	} {
		f.Add([]byte(s))
	}
	const max = 1 << 16
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		_, n, err := ReadEdocAnswer(bytes.NewReader(in), &out, max)
		if out.Len() > max {
			t.Fatalf("wrote %d bytes past the limit %d", out.Len(), max)
		}
		if err != nil {
			return
		}
		if n != int64(out.Len()) {
			t.Fatalf("n %d, wrote %d", n, out.Len())
		}
		var v map[string]any
		if json.Unmarshal(in, &v) != nil {
			return
		}
		s, ok := v["data"].(string)
		if !ok {
			return
		}
		s = strings.Map(func(r rune) rune {
			if strings.ContainsRune(" \t\r\n", r) {
				return -1
			}
			return r
		}, s)
		want, derr := base64.StdEncoding.DecodeString(s)
		if derr != nil {
			return
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("decoded %q, encoding/json and base64 read %q", out.Bytes(), want)
		}
	})
}
