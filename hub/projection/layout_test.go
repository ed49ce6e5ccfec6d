package projection

import (
	"errors"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
)

func TestKeys(t *testing.T) {
	// A document's date is its id's, in UTC: 23:30 on the 25th in UTC is
	// already the 26th in Ho Chi Minh City.
	at := time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)
	id := document.NewID(at)
	st := &document.Status{DocumentID: id, Unit: "000.02.00.H29", Code: "01", Time: time.Unix(0, 1764113400123456789)}
	tests := []struct{ got, want string }{
		{ContainerKey(id), "2026/11/25/" + string(id) + "/container.asice"},
		{ReceiptKey(id), "2026/11/25/" + string(id) + "/receipt.p7s"},
		{StatusKey(st), "2026/11/25/" + string(id) + "/status/000.02.00.H29-01-1764113400123456789.json"},
		{UnitKey("000.02.00.H29", time.Unix(0, 42)), "units/000.02.00.H29/42.json"},
		{RejectedKey(at.In(time.FixedZone("ICT", 7*3600)), "sub-1", ReasonsName), "rejected/2026/11/25/sub-1/reasons.json"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestParseKey: every key the layout builds parses back to what built it;
// keys outside the layout are other, and keys under its prefixes that do
// not follow it are errors (a rebuild reports them).
func TestParseKey(t *testing.T) {
	id := document.NewID(time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC))
	day := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	st := &document.Status{DocumentID: id, Unit: "000.02.00.H29", Code: "05", Time: time.Unix(0, 1764113400123456789)}
	good := []struct {
		key  string
		want Key
	}{
		{ContainerKey(id), Key{Kind: KindContainer, Day: day, Doc: id}},
		{ReceiptKey(id), Key{Kind: KindReceipt, Day: day, Doc: id}},
		{StatusKey(st), Key{Kind: KindStatus, Day: day, Doc: id, Unit: st.Unit, Code: st.Code, At: st.Time.UTC()}},
		{StatusSignatureKey(st), Key{Kind: KindStatusSignature, Day: day, Doc: id, Unit: st.Unit, Code: st.Code, At: st.Time.UTC()}},
		{UnitKey("000.02.00.H29", time.Unix(0, 42)), Key{Kind: KindUnit, Unit: "000.02.00.H29", At: time.Unix(0, 42).UTC()}},
		{RejectedKey(day, "status-x-0123", ReasonsName), Key{Kind: KindRejected, Day: day, Ref: "status-x-0123", Name: ReasonsName}},
		{RejectedKey(day, "sub-1", RejectedHead), Key{Kind: KindRejectedPart, Day: day, Ref: "sub-1", Name: RejectedHead}},
		{"health/probe-20261125T000000.000000000", Key{Kind: KindOther}},
		{"README.txt", Key{Kind: KindOther}},
	}
	for _, tt := range good {
		got, err := ParseKey(tt.key)
		if err != nil || got != tt.want {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", tt.key, got, err, tt.want)
		}
	}
	for _, key := range []string{
		"2026/11/25/" + string(id),
		"2026/11/25/not-an-id/container.asice",
		"2026/13/25/" + string(id) + "/container.asice",
		"2026/11/25/" + string(id) + "/other.bin",
		"2026/11/25/" + string(id) + "/status/000.02.00.H29-01.json",
		"2026/11/25/" + string(id) + "/status/000.02.00.H29-99-1.json",
		"2026/11/25/" + string(id) + "/status/bad-unit-01-1.json",
		"units/000.02.00.H29/x.json",
		"units/not-a-unit/1.json",
		"rejected/2026/11/25/sub-1",
	} {
		if _, err := ParseKey(key); !errors.Is(err, ErrLayout) {
			t.Errorf("ParseKey(%q): %v, want ErrLayout", key, err)
		}
	}
}

// TestFlag: the flag the pipeline gives a status from a document's history
// is the one the index gives it.
func TestFlag(t *testing.T) {
	id := document.NewID(time.Now())
	t0 := time.Now().UTC()
	h := func(code document.StatusCode, d time.Duration) index.StatusEntry {
		return index.StatusEntry{Status: document.Status{DocumentID: id, Unit: "000.02.00.H29", Code: code, Time: t0.Add(d)}}
	}
	st := func(code document.StatusCode, d time.Duration) document.Status { return h(code, d).Status }
	other := index.StatusEntry{Status: document.Status{DocumentID: id, Unit: "000.03.00.H29", Code: "06", Time: t0}}
	tests := []struct {
		name    string
		history []index.StatusEntry
		st      document.Status
		want    bool
	}{
		{"first delivered", nil, st("01", 0), false},
		{"accepted before delivered", nil, st("03", 0), true},
		{"accepted after delivered", []index.StatusEntry{h("01", 0)}, st("03", time.Second), false},
		{"another unit's final code does not count", []index.StatusEntry{other, h("01", 0)}, st("03", time.Second), false},
		{"delivered reported late, after accepted", []index.StatusEntry{h("03", time.Second)}, st("01", 0), false},
		{"after a final code", []index.StatusEntry{h("01", 0), h("06", time.Second)}, st("05", 2*time.Second), true},
		{"the same status again", []index.StatusEntry{h("01", 0)}, st("01", 0), false},
	}
	for _, tt := range tests {
		if got := Flag(tt.history, tt.st); got != tt.want {
			t.Errorf("%s: flagged %v, want %v", tt.name, got, tt.want)
		}
	}
}
