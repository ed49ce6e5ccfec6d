package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/events"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// logged returns the entries of the hub's log once a published checkpoint
// holds at least n of them (read back and checked against it).
func (e *env) logged(n uint64) []*evidence.Entry {
	e.t.Helper()
	ctx := e.t.Context()
	if n > 0 {
		if _, err := e.tl.Await(ctx, n-1); err != nil {
			e.t.Fatal(err)
		}
	}
	_, raw, err := e.tl.Checkpoint(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	cp, err := evidence.OpenCheckpoint(raw, e.tl.Origin(), e.tlKey)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*evidence.Entry
	err = evidence.ReadAll(ctx, e.tl.Reader().ReadEntryBundle, cp, func(_ uint64, b []byte) error {
		en, err := evidence.ParseEntry(b)
		out = append(out, en)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// receiptLog verifies the archived receipt of id and returns the log entry
// it names, after checking that the entry is the acceptance it signs.
func (e *env) receiptLog(id document.ID, receipt []byte) (uint64, *evidence.Entry) {
	e.t.Helper()
	r := container.VerifyReceipt(receipt, "", container.Options{Trust: e.trust})
	if !r.Valid || r.Receipt.Log == nil {
		e.t.Fatalf("receipt: valid %v, log %+v: %v", r.Valid, r.Receipt, r.Reasons)
	}
	rc := r.Receipt
	if rc.Log.Origin != e.tl.Origin() {
		e.t.Fatalf("the receipt names log %q, the hub's is %q", rc.Log.Origin, e.tl.Origin())
	}
	p, err := func() (*evidence.Proof, error) {
		if _, err := e.tl.Await(e.t.Context(), rc.Log.Index); err != nil {
			return nil, err
		}
		return e.tl.Proof(e.t.Context(), rc.Log.Index)
	}()
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := p.Verify(evidence.ProofOptions{Origin: e.tl.Origin(), LogKey: e.tlKey})
	if err != nil {
		e.t.Fatal(err)
	}
	en := v.Entry
	if en.Kind != evidence.Accepted || en.Doc != string(id) || en.Container != rc.ContainerSHA256 || !en.Time.Equal(rc.AcceptedAt) ||
		en.Sender != string(rc.From) || len(en.Recipients) != len(rc.To) {
		e.t.Fatalf("entry %d is not the receipt's acceptance:\n%+v\n%+v", rc.Log.Index, en, rc)
	}
	return rc.Log.Index, en
}

// TestDecisionsLogged: every decision the pipeline makes is in the hub's
// transparency log before it is told: an acceptance (the receipt names its
// entry, which names the container, sender, recipients, time and the CRLs
// in force), a rejection (digest and reasons), a recorded status and, for
// 01, the delivery, a refused status.
func TestDecisionsLogged(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	if err := e.trust.LoadCRL(e.ca.CRLPath()); err != nil { // as the hub does
		t.Fatal(err)
	}
	e.run(e.deps)
	a, b := e.units[uA], e.units[uB]

	id, meta := doc(uA, uB, uC)
	data := a.build(t, meta, 20<<10)
	a.submit(t, id, data)
	n := a.notice(t)
	if n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	_, acc := e.receiptLog(id, n.Receipt)
	if !slices.Equal(acc.Recipients, []string{string(uB), string(uC)}) || len(acc.CRLs) == 0 {
		t.Errorf("accepted entry: recipients %v, CRLs %v", acc.Recipients, acc.CRLs)
	}
	for _, c := range acc.CRLs {
		if !slices.ContainsFunc(e.trust.CRLs(time.Now()), func(i pki.CRLInfo) bool { return i.SHA256 == c }) {
			t.Errorf("the entry names CRL %s, not one in force", c)
		}
	}

	// Rejected: to a unit that does not exist.
	rid, rmeta := doc(uA, "000.99.00.H29")
	rdata := a.build(t, rmeta, 4<<10)
	a.submit(t, rid, rdata)
	if n := a.notice(t); n.Type != protocol.NoticeRejected {
		t.Fatalf("notice %+v", n)
	}
	sum := sha256.Sum256(rdata)

	// A status: 01 from B, logged with the delivery; 13 from B (taking the
	// document back, which only its sender may) is refused.
	st := document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC().Truncate(time.Millisecond), Code: document.StatusDelivered}
	b.status(t, &st)
	if n := a.notice(t); n.Type != protocol.NoticeStatus {
		t.Fatalf("notice %+v", n)
	}
	bad := document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC().Truncate(time.Millisecond), Code: document.StatusCancelled}
	b.status(t, &bad)
	if n := b.notice(t); n.Type != protocol.NoticeStatusRejected {
		t.Fatalf("notice %+v", n)
	}

	entries := e.logged(5)
	kinds := map[evidence.Kind]*evidence.Entry{}
	for _, en := range entries {
		if kinds[en.Kind] == nil {
			kinds[en.Kind] = en // the first of each kind
		}
	}
	if r := kinds[evidence.Rejected]; r == nil || r.Container != hex.EncodeToString(sum[:]) || r.Doc != string(rid) || r.Sender != string(uA) ||
		!slices.Equal(r.Reasons, []string{string(reason.RecipientUnknown)}) {
		t.Errorf("rejected entry %+v", r)
	}
	if s := kinds[evidence.Status]; s == nil || s.Doc != string(id) || s.Unit != string(uB) || s.Status != "01" {
		t.Errorf("status entry %+v", s)
	}
	if d := kinds[evidence.Delivered]; d == nil || d.Doc != string(id) || d.Unit != string(uB) || d.Container != acc.Container {
		t.Errorf("delivered entry %+v", d)
	}
	refused := 0
	for _, en := range entries {
		if en.Kind == evidence.Rejected && en.Doc == string(id) && en.Sender == string(uB) &&
			slices.Equal(en.Reasons, []string{string(reason.StatusNotEntitled)}) {
			refused++
		}
	}
	if len(entries) != 5 || refused != 1 {
		t.Errorf("%d entries, %d refused statuses: %+v", len(entries), refused, entries)
	}
}

// TestCrashAfterLogging: the hub dies after its acceptance is logged and
// before the receipt is written; the hub that decides it again logs it
// again (the same key) and its receipt names that entry. A hub that dies
// once the receipt is written logs nothing more: the receipt names the
// entry already.
func TestCrashAfterLogging(t *testing.T) {
	for _, tc := range []struct {
		step    string
		entries int
	}{{"logged", 2}, {"receipted", 1}} {
		t.Run("after "+tc.step, func(t *testing.T) {
			e := newEnv(t, uA, uB, uC)
			var crashed atomic.Bool
			deps := e.deps
			h := e.hubConn()
			deps.JS, deps.Stage, deps.Events = h.JS, e.stage(h), events.NewPublisher(h.JS, "crashing")
			deps.hook = func(s string) error {
				if s == tc.step && crashed.CompareAndSwap(false, true) {
					return errors.New("crash")
				}
				return nil
			}
			stop := e.runChecked(deps, false)
			a := e.units[uA]
			id, meta := doc(uA, uB, uC)
			a.submit(t, id, a.build(t, meta, 8<<10))
			for deadline := time.Now().Add(30 * time.Second); !crashed.Load(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the hub never reached " + tc.step)
				}
			}
			h.Close()
			stop()
			e.run(e.deps)
			n := a.notice(t)
			if n.Type != protocol.NoticeAccepted {
				t.Fatalf("notice %+v", n)
			}
			e.waitIdle()
			e.assertOnce(id, n)
			idx, acc := e.receiptLog(id, n.Receipt)
			var same []uint64
			for i, en := range e.logged(uint64(tc.entries)) {
				if en.Key() == acc.Key() {
					same = append(same, uint64(i))
				}
			}
			if len(same) != tc.entries || !slices.Contains(same, idx) {
				t.Errorf("entries of the acceptance at %v (want %d), the receipt names %d", same, tc.entries, idx)
			}
		})
	}
}

// TestLogUnavailable: while the log cannot append, nothing is decided (the
// submission is retried, never accepted without its entry); once it can,
// the document is accepted and logged.
func TestLogUnavailable(t *testing.T) {
	e := newEnv(t, uA, uB)
	var down atomic.Bool
	down.Store(true)
	deps := e.deps
	deps.TLog = &flakyLog{Log: e.tl, down: &down}
	e.cfg.MaxBackoff = 100 * time.Millisecond
	e.run(deps)
	a := e.units[uA]
	id, meta := doc(uA, uB)
	a.submit(t, id, a.build(t, meta, 8<<10))
	time.Sleep(500 * time.Millisecond)
	if keys := e.objects(projection.DocumentPrefix(id)); contains(keys, "receipt.p7s") {
		t.Fatalf("a receipt was written while the log was down: %v", keys)
	}
	down.Store(false)
	n := a.notice(t)
	if n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	e.receiptLog(id, n.Receipt)
}

type flakyLog struct {
	Log
	down *atomic.Bool
}

func (f *flakyLog) AppendAsync(ctx context.Context, en *evidence.Entry) func() (uint64, error) {
	if f.down.Load() {
		return func() (uint64, error) { return 0, errors.New("log down") }
	}
	return f.Log.AppendAsync(ctx, en)
}
