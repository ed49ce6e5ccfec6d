package outbox

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

const (
	me    = document.UnitID("000.00.00.H29")
	other = document.UnitID("000.01.00.H29")
)

func newOutbox(t *testing.T, p *agenttest.PKI, max int64) (*Outbox, *spool.Spool) {
	t.Helper()
	sp, err := spool.Open(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	o, err := New(me, p.Unit(t, me), p.Trust, sp, max)
	if err != nil {
		t.Fatal(err)
	}
	return o, sp
}

func metaJSON(t *testing.T, change func(m map[string]any)) []byte {
	t.Helper()
	_, b := agenttest.Meta(me, other)
	var m map[string]any
	json.Unmarshal(b, &m)
	if change != nil {
		change(m)
	}
	out, _ := json.Marshal(m)
	return out
}

func TestSubmit(t *testing.T) {
	p := agenttest.NewPKI(t)
	o, sp := newOutbox(t, p, 1<<20)
	pdf := container.File{Name: "van-ban.pdf", Data: []byte("%PDF-1.7")}
	foreign := p.Container(t, metaJSON(t, func(m map[string]any) { m["from"] = string(other); m["to"] = []string{string(me)} }), 10)
	tests := []struct {
		name  string
		sub   Submission
		kind  Kind
		field string
		code  reason.Code
	}{
		{"complete", Submission{Meta: metaJSON(t, nil), Files: []container.File{pdf}}, 0, "", ""},
		{"id and from filled in", Submission{Meta: metaJSON(t, func(m map[string]any) { delete(m, "id"); delete(m, "from") }), Files: []container.File{pdf}}, 0, "", ""},
		{"prebuilt", Submission{Container: p.Container(t, metaJSON(t, nil), 100)}, 0, "", ""},
		{"no metadata", Submission{Files: []container.File{pdf}}, Invalid, "metadata", ""},
		{"not JSON", Submission{Meta: []byte("{"), Files: []container.File{pdf}}, Invalid, "metadata", ""},
		{"unknown field", Submission{Meta: metaJSON(t, func(m map[string]any) { m["colour"] = "red" }), Files: []container.File{pdf}}, Invalid, "metadata", ""},
		{"malformed recipient", Submission{Meta: metaJSON(t, func(m map[string]any) { m["to"] = []string{"H29"} }), Files: []container.File{pdf}}, Invalid, "to[0]", ""},
		{"no files", Submission{Meta: metaJSON(t, nil)}, Invalid, "files", ""},
		{"bad file name", Submission{Meta: metaJSON(t, nil), Files: []container.File{{Name: "../x.pdf", Data: []byte("x")}}}, Invalid, "files[0]", ""},
		{"wrong sender", Submission{Meta: metaJSON(t, func(m map[string]any) { m["from"] = string(other); m["to"] = []string{string(me)} }), Files: []container.File{pdf}}, Unprocessable, "from", ""},
		{"too large", Submission{Meta: metaJSON(t, nil), Files: []container.File{{Name: "big.pdf", Data: make([]byte, 2<<20)}}}, TooLarge, "", ""},
		{"prebuilt by another unit", Submission{Container: foreign}, Unprocessable, "from", ""},
		{"prebuilt garbage", Submission{Container: []byte("not a zip")}, Invalid, "", reason.ContainerMalformed},
		{"container and files", Submission{Container: foreign, Files: []container.File{pdf}}, Invalid, "container", ""},
		{"the packet's name taken", Submission{Meta: metaJSON(t, nil), Files: []container.File{pdf, {Name: "original.edxml", Data: []byte("<x/>")}}}, Invalid, "files[1]", ""},
		{"a packet's original", Submission{Meta: metaJSON(t, nil), Files: []container.File{pdf, {Name: "original.edxml", Data: []byte("<x/>")}}, FromPacket: true}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, created, err := o.Submit(t.Context(), tt.sub)
			if tt.kind == 0 {
				if err != nil || !created || rec.State != spool.Spooled {
					t.Fatalf("submit: %v", err)
				}
				raw, _ := sp.Container(rec.ID)
				c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: p.Trust})
				if !rep.Valid || c.Meta.From != me {
					t.Fatalf("spooled container: %v", rep.Reasons)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Kind != tt.kind {
				t.Fatalf("err %v, want kind %d", err, tt.kind)
			}
			if tt.field != "" && !hasField(e.Problems, tt.field) {
				t.Fatalf("no problem at %s: %v", tt.field, e)
			}
			if tt.code != "" && !e.Reasons.Has(tt.code) {
				t.Fatalf("no reason %s: %v", tt.code, e)
			}
		})
	}
	if n, _ := sp.Depth(t.Context()); n != 4 {
		t.Fatalf("spooled %d, want 4", n)
	}
	// Each spooled document keeps its edXML DocumentId.
	d, _ := document.Parse(metaJSON(t, nil))
	if r, err := sp.FindEdXML(t.Context(), "000.00.00.H29,"+strings.ReplaceAll(d.PromulgatedAt, "-", "/")+",1234/QĐ-UBND"); err != nil || r.EdXMLID == "" {
		t.Fatalf("find by edXML id: %+v %v", r, err)
	}
}

func hasField(ps document.Problems, f string) bool {
	for _, p := range ps {
		if p.Field == f || strings.HasPrefix(p.Field, f) {
			return true
		}
	}
	return false
}

func TestSubmitRepeated(t *testing.T) {
	p := agenttest.NewPKI(t)
	o, _ := newOutbox(t, p, 0)
	meta := metaJSON(t, nil)
	files := []container.File{{Name: "a.pdf", Data: []byte("%PDF")}}
	r1, c1, err := o.Submit(t.Context(), Submission{Meta: meta, Files: files})
	if err != nil || !c1 {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a new signing time: another container
	r2, c2, err := o.Submit(t.Context(), Submission{Meta: meta, Files: files})
	if err != nil || c2 || r2.SHA256 != r1.SHA256 {
		t.Fatalf("repeat: created %v err %v", c2, err)
	}
	_, _, err = o.Submit(t.Context(), Submission{Meta: meta, Files: []container.File{{Name: "b.pdf", Data: []byte("%PDF")}}})
	if !errors.Is(err, spool.ErrConflict) {
		t.Fatalf("same id, other files: %v", err)
	}
	noID := metaJSON(t, func(m map[string]any) { delete(m, "id") })
	a, _, _ := o.Submit(t.Context(), Submission{Meta: noID, Files: files, IdempotencyKey: "dms-42"})
	b, created, _ := o.Submit(t.Context(), Submission{Meta: noID, Files: files, IdempotencyKey: "dms-42"})
	if created || a.ID != b.ID {
		t.Fatalf("idempotency key: %s %s", a.ID, b.ID)
	}
}

func TestNewChecksTheCertificate(t *testing.T) {
	p := agenttest.NewPKI(t)
	sp, _ := spool.Open(t.Context(), t.TempDir(), nil)
	defer sp.Close()
	if _, err := New(me, p.Unit(t, other), p.Trust, sp, 0); err == nil {
		t.Fatal("another unit's certificate was accepted")
	}
}
