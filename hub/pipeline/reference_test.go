package pipeline

import (
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// referring makes a document from one unit to others that names an earlier
// one in in_reply_to, with a business type.
func referring(from document.UnitID, bt document.BusinessType, ref document.ID, to ...document.UnitID) (document.ID, []byte) {
	d := document.Template(time.Now())
	d.From, d.To, d.BusinessType, d.InReplyTo = from, to, bt, ref
	d.Subject = "Về việc thu hồi, cập nhật hoặc trả lời văn bản trước"
	b, _ := d.Marshal()
	return d.ID, b
}

// TestReferences: in_reply_to must name an accepted document the sender
// sent or received; a revocation (1), update (2) or replacement (3) must name
// one the sender itself sent. Before this rule, a unit could revoke another
// unit's document.
func TestReferences(t *testing.T) {
	e := newEnv(t, uA, uB, uC, uD)
	e.cfg.ReferenceWait = 2 * time.Second
	e.cfg.MaxBackoff = 500 * time.Millisecond
	e.run(e.deps)
	a := e.units[uA]
	// A sends X to B.
	x, meta := doc(uA, uB)
	a.submit(t, x, a.build(t, meta, 1<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("X: %+v", n)
	}
	unknown := document.NewID(time.Now().Add(-time.Hour))
	cases := []struct {
		name string
		from document.UnitID
		bt   document.BusinessType
		ref  document.ID
		want reason.Code // "" for accepted
	}{
		{"another unit revokes A's document", uB, document.BusinessRevoke, x, reason.ReferenceNotSender},
		{"another unit updates A's document", uB, document.BusinessUpdate, x, reason.ReferenceNotSender},
		{"another unit replaces A's document", uB, document.BusinessReplace, x, reason.ReferenceNotSender},
		{"a revocation of no document", uA, document.BusinessRevoke, unknown, reason.ReferenceUnknown},
		{"a reply to no document", uB, document.BusinessNew, unknown, reason.ReferenceUnknown},
		{"a reply from a unit that never saw the document", uC, document.BusinessNew, x, reason.ReferenceUnknown},
		{"a revocation by a unit that never saw the document", uC, document.BusinessRevoke, x, reason.ReferenceUnknown},
		{"the recipient replies", uB, document.BusinessNew, x, ""},
		{"the sender updates", uA, document.BusinessUpdate, x, ""},
		{"the sender replaces", uA, document.BusinessReplace, x, ""},
		{"the sender revokes", uA, document.BusinessRevoke, x, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := e.units[tc.from]
			id, meta := referring(tc.from, tc.bt, tc.ref, uA, uD)
			if tc.from == uA {
				id, meta = referring(tc.from, tc.bt, tc.ref, uB, uD)
			}
			u.submit(t, id, u.build(t, meta, 1<<10))
			n := u.notice(t)
			if n.DocumentID != id {
				t.Fatalf("notice for %s, want %s", n.DocumentID, id)
			}
			switch {
			case tc.want == "" && n.Type != protocol.NoticeAccepted:
				t.Fatalf("notice %s %v, want accepted", n.Type, n.Reasons)
			case tc.want != "" && (n.Type != protocol.NoticeRejected || !n.Reasons.Has(tc.want)):
				t.Fatalf("notice %s %v, want rejected with %s", n.Type, n.Reasons, tc.want)
			}
		})
	}
}

// TestReferenceNotYetIndexed: a revocation processed before the document it
// names (submitted right after it, both in the pipeline at once) waits for
// it rather than being rejected; so does one in a backlog after an outage,
// submitted longer than ReferenceWait ago.
func TestReferenceNotYetIndexed(t *testing.T) {
	for _, wait := range []time.Duration{time.Minute, time.Millisecond} {
		t.Run("wait "+wait.String(), func(t *testing.T) {
			e := newEnv(t, uA, uB)
			e.cfg.ReferenceWait = wait
			e.cfg.MaxBackoff = 500 * time.Millisecond
			a := e.units[uA]
			x, meta := doc(uA, uB)
			xdata := a.build(t, meta, 1<<10)
			rev, rmeta := referring(uA, document.BusinessRevoke, x, uB)
			// The revocation is first in the queue; X comes after it.
			a.submit(t, rev, a.build(t, rmeta, 1<<10))
			e.run(e.deps)
			e.waitAttempts(2)
			a.submit(t, x, xdata)
			got := map[document.ID]protocol.NoticeType{}
			for range 2 {
				n := a.notice(t)
				got[n.DocumentID] = n.Type
				if n.Type != protocol.NoticeAccepted {
					t.Errorf("%s: %s %v", n.DocumentID, n.Type, n.Reasons)
				}
			}
			if got[x] != protocol.NoticeAccepted || got[rev] != protocol.NoticeAccepted {
				t.Fatalf("notices %v", got)
			}
		})
	}
}

// waitAttempts waits until the hub's consumer has delivered the first
// pending submission n times (it was naked in between).
func (e *env) waitAttempts(n int) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := e.js.Consumer(e.t.Context(), "EDX_SUBMIT", protocol.HubConsumer)
		if err == nil {
			info, err := c.Info(e.t.Context())
			if err == nil && info.NumRedelivered > 0 && int(info.Delivered.Consumer) >= n {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("the hub did not try the first submission %d times", n)
}
