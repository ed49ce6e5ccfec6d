package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// status publishes a status as the unit.
func (u *unit) status(t *testing.T, st *document.Status) {
	t.Helper()
	m, err := protocol.StatusMsg(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatalf("%s: publish status %s: %v", u.id, st.Code, err)
	}
}

// refused waits for the unit's next notice and checks it refuses a status
// with code.
func (u *unit) refused(t *testing.T, code reason.Code) {
	t.Helper()
	n := u.notice(t)
	if n.Type != protocol.NoticeStatusRejected || !n.Reasons.Has(code) {
		t.Fatalf("%s: notice %s %v, want status_rejected with %s", u.id, n.Type, n.Reasons.Codes(), code)
	}
}

// TestStatusLimits: a status's fields, the number of statuses a unit reports
// on one document, who may send which code and when are all bounded; a
// refused status is answered with its reason code and reaches neither the
// index, the archive nor the sender. A 13 (taken back) from the sender is
// recorded and forwarded to every recipient.
func TestStatusLimits(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.cfg.MaxStatuses = 4
	e.run(e.deps)
	a, b, c := e.units[uA], e.units[uB], e.units[uC]
	id, meta := doc(uA, uB, uC)
	a.submit(t, id, a.build(t, meta, 4<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	// Every status gets its own time: statuses that differ only in their
	// text would share a Msg-Id and the stream would keep one.
	now := time.Now().UTC()
	tick := 0
	next := func() time.Time { tick++; return now.Add(time.Duration(tick) * time.Millisecond) }
	st := func(u document.UnitID, code document.StatusCode, at time.Time) *document.Status {
		return &document.Status{DocumentID: id, Unit: u, Time: at, Code: code}
	}

	t.Run("oversized field", func(t *testing.T) {
		for _, s := range []*document.Status{
			{DocumentID: id, Unit: uB, Time: next(), Code: document.StatusDelivered,
				Officer: &document.Officer{Name: strings.Repeat("Nguyễn Văn A ", 1000)}},
			{DocumentID: id, Unit: uB, Time: next(), Code: document.StatusDelivered,
				Description: strings.Repeat("x", document.MaxStatusDescription+1)},
			{DocumentID: id, Unit: uB, Time: next(), Code: document.StatusDelivered,
				Officer: &document.Officer{Department: "Văn thư", Contact: strings.Repeat("0", document.MaxOfficerField+1)}},
		} {
			b.status(t, s)
			b.refused(t, reason.StatusInvalid)
		}
	})

	t.Run("code from the wrong party", func(t *testing.T) {
		b.status(t, st(uB, document.StatusCancelled, next())) // a recipient cannot take a document back
		b.refused(t, reason.StatusNotEntitled)
		a.status(t, st(uA, document.StatusAccepted, next())) // the sender cannot report progress
		a.refused(t, reason.StatusNotEntitled)
	})

	t.Run("implausible time", func(t *testing.T) {
		b.status(t, st(uB, document.StatusDelivered, now.Add(time.Hour)))
		b.refused(t, reason.StatusTime)
		b.status(t, st(uB, document.StatusDelivered, now.Add(-24*time.Hour)))
		b.refused(t, reason.StatusTime)
	})

	t.Run("too many on one document", func(t *testing.T) {
		codes := []document.StatusCode{document.StatusDelivered, document.StatusAccepted, document.StatusInProgress, document.StatusInProgress}
		for i, code := range codes {
			b.status(t, st(uB, code, now.Add(time.Duration(i)*time.Second)))
			if n := a.notice(t); n.Type != protocol.NoticeStatus || n.Status.Code != code {
				t.Fatalf("status %d: sender's notice %+v", i, n)
			}
		}
		b.status(t, st(uB, document.StatusInProgress, now.Add(10*time.Second)))
		b.refused(t, reason.StatusTooMany)
		// The limit is per unit: C still reports.
		c.status(t, st(uC, document.StatusDelivered, now.Add(500*time.Millisecond)))
		if n := a.notice(t); n.Type != protocol.NoticeStatus || n.Status.Unit != uC {
			t.Fatalf("C's status: sender's notice %+v", n)
		}
	})

	t.Run("sender takes the document back", func(t *testing.T) {
		back := st(uA, document.StatusCancelled, now.Add(20*time.Second))
		back.Description = "Văn bản ban hành nhầm, thu hồi"
		a.status(t, back)
		for _, r := range []*unit{b, c} {
			n := r.notice(t)
			if n.Type != protocol.NoticeStatus || n.Status.Code != document.StatusCancelled || n.Status.Unit != uA || n.DocumentID != id {
				t.Fatalf("%s: notice %+v", r.id, n)
			}
		}
	})

	// Only the accepted statuses are in the index and the archive.
	det, err := e.ix.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range det.History {
		got = append(got, string(h.Unit)+":"+string(h.Code))
	}
	want := []string{string(uB) + ":01", string(uC) + ":01", string(uB) + ":03", string(uB) + ":05", string(uB) + ":05", string(uA) + ":13"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("history %v, want %v", got, want)
	}
	prefix := e.statusPrefix(id)
	if keys := e.objects(prefix); len(keys) != len(want) {
		t.Errorf("archived statuses %v, want %d", keys, len(want))
	}
}

// statusPrefix is where a document's statuses are archived.
func (e *env) statusPrefix(id document.ID) string {
	return StatusKey(&document.Status{DocumentID: id, Unit: "x", Code: "01"})[:len("2006/01/02/")+len(id)+len("/status/")]
}
