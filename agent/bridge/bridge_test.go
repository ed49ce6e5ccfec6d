package bridge

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/axis"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

type noExchange struct{}

func (noExchange) SubmitDocument(context.Context, io.Reader, packets.Submission) (*spool.Record, bool, error) {
	panic("not used")
}
func (noExchange) Get(context.Context, document.ID) (*spool.Record, error) { panic("not used") }
func (noExchange) Container(document.ID) ([]byte, error)                   { panic("not used") }

// newTest opens a bridge whose upstream lists sent as what it sent.
func newTest(t *testing.T, dir string, sent []axis.SentItem) *Bridge {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := axis.OK()
		a.Data = sent
		json.NewEncoder(w).Encode(a)
	}))
	t.Cleanup(srv.Close)
	cfg := Config{Enabled: true, URL: srv.URL, SystemID: "vxp.test", SecretEnv: "X"}
	cfg.SetDefaults()
	b, err := New(t.Context(), cfg, []byte("0123456789abcdef"), dir, Deps{Unit: "000.99.00.H29", Exchange: noExchange{}, Spool: noExchange{},
		Publish: func(context.Context, *document.Status) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestReconcile: after an attempt whose answer was lost, the document is
// found among those the upstream lists as sent only when nothing else can
// be it: a recipient of it, its number/notation and subject, sent since the
// attempt began, and not claimed by another document.
func TestReconcile(t *testing.T) {
	ctx := t.Context()
	now := time.Now()
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	item := func(id, to, notation, title, sent string) axis.SentItem {
		return axis.SentItem{SenderDocID: id, ToCode: to, Notation: notation, Title: title, SentTime: sent}
	}
	for _, c := range []struct {
		name string
		sent []axis.SentItem
		want string
	}{
		{"found", []axis.SentItem{item("up-2", "000.00.00.G22", "12/UBND-VX", "V/v báo cáo", at(0))}, "up-2"},
		{"claimed by another", []axis.SentItem{item("up-1", "000.00.00.G22", "12/UBND-VX", "V/v báo cáo", at(0))}, ""},
		{"another recipient", []axis.SentItem{item("up-2", "000.00.00.G23", "12/UBND-VX", "V/v báo cáo", at(0))}, ""},
		{"another number", []axis.SentItem{item("up-2", "000.00.00.G22", "13/UBND-VX", "V/v báo cáo", at(0))}, ""},
		{"another subject", []axis.SentItem{item("up-2", "000.00.00.G22", "12/UBND-VX", "V/v khác", at(0))}, ""},
		{"sent before the attempt", []axis.SentItem{item("up-2", "000.00.00.G22", "12/UBND-VX", "V/v báo cáo", at(-time.Hour))}, ""},
		{"escaped title", []axis.SentItem{item("up-3", "000.00.00.G22", "12/UBND-VX", "V/v b&#225;o c&#225;o", at(0))}, "up-3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newTest(t, t.TempDir(), c.sent)
			first := &Carried{ID: document.NewID(now), Sender: "000.01.00.H29", Recipients: []document.UnitID{"000.00.00.G22"},
				Notation: "11/UBND-VX", Subject: "V/v trước"}
			doc := &Carried{ID: document.NewID(now), Sender: "000.01.00.H29", Recipients: []document.UnitID{"000.00.00.G22"},
				Notation: "12/UBND-VX", Subject: "V/v báo cáo"}
			for _, d := range []*Carried{first, doc} {
				if _, err := b.st.addCarried(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.st.carriedSent(ctx, first.ID, "up-1"); err != nil {
				t.Fatal(err)
			}
			if err := b.st.trying(ctx, doc.ID); err != nil {
				t.Fatal(err)
			}
			got, err := b.st.carried(ctx, doc.ID)
			if err != nil || !got.Uncertain || got.TriedAt == nil {
				t.Fatalf("%v %+v", err, got)
			}
			id, err := b.reconcile(ctx, got)
			if err != nil || id != c.want {
				t.Fatalf("reconcile: %q %v, want %q", id, err, c.want)
			}
		})
	}
}

// TestStateOnce: what the bridge takes on it keeps across a restart, once:
// a document carried, a status each way, an item fetched.
func TestStateOnce(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	b := newTest(t, dir, nil)
	id := document.NewID(time.Now())
	c := &Carried{ID: id, Sender: "000.01.00.H29", Recipients: []document.UnitID{"000.00.00.G22"}, EdXMLID: "000.01.00.H29,2026/11/30,12/UBND-VX",
		About: edxml.ResponseFor{OrganID: "000.01.00.H29", DocumentID: "000.01.00.H29,2026/11/30,12/UBND-VX"}}
	if added, err := b.st.addCarried(ctx, c); err != nil || !added {
		t.Fatal(added, err)
	}
	if err := b.st.trying(ctx, id); err != nil {
		t.Fatal(err)
	}
	st := document.Status{DocumentID: id, Unit: "000.00.00.G22", Time: time.Now().UTC(), Code: document.StatusAccepted}
	if err := b.st.putFetched(ctx, &Fetched{Kind: axis.MessageStatus, UpstreamID: "s-1", State: stateTaken, DocID: id}, &st); err != nil {
		t.Fatal(err)
	}
	up := &UpStatus{Status: document.Status{DocumentID: id, Unit: "000.01.00.H29", Time: time.Now().UTC(), Code: document.StatusCancelled},
		About: c.About, Recipients: c.Recipients}
	if added, err := b.st.addUp(ctx, up); err != nil || !added {
		t.Fatal(added, err)
	}
	b.Close()

	b = newTest(t, dir, nil)
	if added, err := b.st.addCarried(ctx, c); err != nil || added {
		t.Fatalf("carried again: %v %v", added, err)
	}
	got, err := b.st.nextCarried(ctx)
	if err != nil || got == nil || got.ID != id || !got.Uncertain || got.Attempts != 1 || got.About.DocumentID != c.About.DocumentID {
		t.Fatalf("after a restart: %v %+v", err, got)
	}
	if g, err := b.st.carriedByEdXML(ctx, c.EdXMLID); err != nil || g.ID != id {
		t.Fatalf("by edXML id: %v", err)
	}
	// The same item again queues nothing more.
	st2 := st
	st2.Time = st.Time.Add(time.Second)
	if err := b.st.putFetched(ctx, &Fetched{Kind: axis.MessageStatus, UpstreamID: "s-1", State: stateTaken, DocID: id}, &st2); err != nil {
		t.Fatal(err)
	}
	downs, err := b.st.nextDown(ctx, 10)
	if err != nil || len(downs) != 1 || !downs[0].Status.Time.Equal(st.Time) {
		t.Fatalf("statuses down: %v %+v", err, downs)
	}
	if added, err := b.st.addUp(ctx, up); err != nil || added {
		t.Fatalf("status up again: %v %v", added, err)
	}
	// Taken, then no longer listed: acknowledged (its answer was lost).
	if err := b.st.ackedUnlisted(ctx, axis.MessageStatus, []string{"s-2"}); err != nil {
		t.Fatal(err)
	}
	if f, err := b.st.fetched(ctx, axis.MessageStatus, "s-1"); err != nil || f.State != stateAcked {
		t.Fatalf("%v %+v", err, f)
	}
	// The hub refuses a status relayed down: recorded.
	if found, err := b.StatusRejected(ctx, st, nil); err != nil || !found {
		t.Fatalf("%v %v", found, err)
	}
	if n, err := b.Ready(ctx); err != nil || n["carried_queued"] != 1 || n["statuses_up_queued"] != 1 || n["statuses_down_queued"] != 0 {
		t.Fatalf("%v %v", n, err)
	}
}
