package pipeline

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/projection"
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
// document's history nor the sender: it is archived under rejected/ with
// its reasons, and listed among the rejected (before, refused statuses
// left no trace). A 13 (taken back) from the sender is recorded and
// forwarded to every recipient.
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
	// The 8 refused: 3 oversized, 2 from the wrong party, 2 at implausible
	// times, 1 too many.
	var refused []string
	for _, k := range e.objects("rejected/") {
		if strings.Contains(k, "/status-"+string(id)+"-") && strings.HasSuffix(k, "/reasons.json") {
			refused = append(refused, k)
		}
	}
	if len(refused) != 8 {
		t.Errorf("archived refused statuses %v, want 8", refused)
	}
	for _, u := range []document.UnitID{uA, uB} {
		rej, err := e.ix.ListRejected(t.Context(), u, 100)
		if err != nil || len(rej) == 0 {
			t.Errorf("%s's refused statuses are not listed: %v %v", u, rej, err)
		}
	}
}

// statusPrefix is where a document's statuses are archived.
func (e *env) statusPrefix(id document.ID) string {
	return projection.StatusPrefix(id)
}

// TestOneUnitCannotStarveAnother: with the hub stopped, unit A writes all it
// can into JetStream (a store of 160 MiB): submissions, uploads, statuses,
// until the server refuses each; unit B still submits a small and a large
// document, and once the hub runs both are accepted. A, its backlog
// processed, submits again.
func TestOneUnitCannotStarveAnother(t *testing.T) {
	e := newEnvWith(t, envOptions{maxStore: 160 << 20, streams: broker.StreamOptions{
		MaxMsgSize:     4<<20 + 512<<10,
		SubmitMaxBytes: 24 << 20, SubmitUnitPending: 2,
		DeliverMaxBytes: 32 << 20, NoticeMaxBytes: 8 << 20,
		StatusMaxBytes: 8 << 20, StatusUnitPending: 50,
		UploadMaxBytes: 32 << 20, UploadUnitQuota: 12 << 20,
		StageMaxBytes: 32 << 20, EventsMaxBytes: 8 << 20,
	}}, uA, uB, uC)
	a, b := e.units[uA], e.units[uB]
	ctx := t.Context()
	full := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "maximum messages per subject exceeded")
	}
	junk := func(n int) *protocol.Container {
		data := make([]byte, n)
		rand.Read(data)
		sum := sha256.Sum256(data)
		return &protocol.Container{DocumentID: document.NewID(time.Now()), SHA256: hex.EncodeToString(sum[:]), Size: int64(n), Data: data}
	}

	// A fills its share of every stream it writes.
	var err error
	n := 0
	for ; n < 100 && err == nil; n++ {
		_, err = a.js.PublishMsg(ctx, protocol.SubmitMsg(uA, junk(4<<20)))
	}
	if !full(err) {
		t.Fatalf("A's submissions: %d, then %v", n, err)
	}
	err, n = nil, 0
	for ; n < 100 && err == nil; n++ {
		err = protocol.UploadStaged(ctx, a.js, uA, junk(4<<20))
	}
	if !full(err) {
		t.Fatalf("A's uploads: %d, then %v", n, err)
	}
	err, n = nil, 0
	for ; n < 1000 && err == nil; n++ {
		m, _ := protocol.StatusMsg(&document.Status{DocumentID: document.NewID(time.Now()), Unit: uA, Code: "01", Time: time.Now().Add(time.Duration(n))})
		_, err = a.js.PublishMsg(ctx, m)
	}
	if !full(err) {
		t.Fatalf("A's statuses: %d, then %v", n, err)
	}

	// B submits, inline and staged.
	small, smallMeta := doc(uB, uC)
	large, largeMeta := doc(uB, uC)
	b.submit(t, small, b.build(t, smallMeta, 64<<10))
	b.submit(t, large, b.build(t, largeMeta, 5<<20))
	if js := e.srv.NATS().JetStreamConfig(); js == nil || js.MaxStore != 160<<20 {
		t.Fatalf("JetStream store %+v", js)
	}

	e.run(e.deps)
	got := map[document.ID]protocol.NoticeType{}
	for range 2 {
		n := b.notice(t)
		got[n.DocumentID] = n.Type
	}
	if got[small] != protocol.NoticeAccepted || got[large] != protocol.NoticeAccepted {
		t.Fatalf("B's notices %v", got)
	}
	// A's waiting submissions were processed (rejected): it submits again.
	for rejected := 0; rejected < 2; {
		switch n := a.notice(t); n.Type {
		case protocol.NoticeRejected:
			rejected++
		case protocol.NoticeStatusRejected: // A's junk statuses
		default:
			t.Fatalf("A's junk: %+v", n)
		}
	}
	id, meta := doc(uA, uC)
	a.submit(t, id, a.build(t, meta, 4<<10))
	for {
		n := a.notice(t)
		if n.Type == protocol.NoticeStatusRejected {
			continue // A's junk statuses
		}
		if n.Type != protocol.NoticeAccepted || n.DocumentID != id {
			t.Fatalf("A's document: %+v", n)
		}
		break
	}
}

// TestRejectedArchiveBounded: a rejected submission keeps its reasons and
// digest, and at most RejectedKeep of its bytes; past a unit's budget of
// rejected bytes, only the reasons and the digest. The sender is told why
// every time.
func TestRejectedArchiveBounded(t *testing.T) {
	e := newEnv(t, uA, uB)
	e.cfg.RejectedKeep = 64 << 10
	e.cfg.RejectedUnitBudget = 150 << 10
	e.run(e.deps)
	a := e.units[uA]
	sizes := []int{10 << 10, 300 << 10, 300 << 10, 300 << 10}
	var kept []int64
	for _, size := range sizes {
		junk := make([]byte, size)
		rand.Read(junk)
		a.submit(t, document.NewID(time.Now()), junk)
		n := a.notice(t)
		if n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.ContainerMalformed) {
			t.Fatalf("notice %+v", n)
		}
		body, _, err := e.arch.Get(t.Context(), n.ArchiveKey)
		if err != nil {
			t.Fatalf("reasons not archived: %v", err)
		}
		var rec projection.RejectedRecord
		if err := json.Unmarshal(body, &rec); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(junk)
		if rec.Size != int64(size) || rec.SHA256 != hex.EncodeToString(sum[:]) || !rec.Reasons.Has(reason.ContainerMalformed) {
			t.Fatalf("reasons.json %+v", rec)
		}
		dir := strings.TrimSuffix(n.ArchiveKey, "reasons.json")
		var stored int64
		for _, k := range e.objects(dir) {
			if strings.HasSuffix(k, "reasons.json") {
				continue
			}
			data, _, err := e.arch.Get(t.Context(), k)
			if err != nil || !bytes.Equal(data, junk[:len(data)]) {
				t.Fatalf("%s: %v", k, err)
			}
			whole := strings.HasSuffix(k, "/"+projection.RejectedContainer)
			if whole != (len(data) == size) || !whole && !strings.HasSuffix(k, "/"+projection.RejectedHead) {
				t.Fatalf("%s holds %d of %d bytes", k, len(data), size)
			}
			stored += int64(len(data))
		}
		if stored != rec.Kept {
			t.Fatalf("archived %d bytes, reasons.json says %d", stored, rec.Kept)
		}
		kept = append(kept, rec.Kept)
	}
	// 10 KiB whole, 64 KiB of each larger one while the budget lasts.
	if want := []int64{10 << 10, 64 << 10, 64 << 10, 0}; fmt.Sprint(kept) != fmt.Sprint(want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
}

// uploadChunks counts a unit's chunks in the upload stream.
func (e *env) uploadChunks(u document.UnitID) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), protocol.StreamUpload)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context(), jetstream.WithSubjectFilter(protocol.UploadSubject(string(u))))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects[protocol.UploadSubject(string(u))]
}

// TestUploadsReleased: a processed submission's upload is removed, whether
// the submission was accepted or refused before its upload was read; an
// upload no submission can use (incomplete, or never submitted) is swept
// away; an upload a waiting submission names is kept. So a unit's quota
// holds only what the hub has still to read.
func TestUploadsReleased(t *testing.T) {
	t.Run("processed", func(t *testing.T) {
		e := newEnv(t, uA, uB)
		e.cfg.Limits.MaxSize = 6 << 20
		e.run(e.deps)
		a := e.units[uA]
		for _, tc := range []struct {
			size int
			want protocol.NoticeType
		}{{5 << 20, protocol.NoticeAccepted}, {7 << 20, protocol.NoticeRejected}} {
			id, meta := doc(uA, uB)
			a.submit(t, id, a.build(t, meta, tc.size))
			if n := a.notice(t); n.Type != tc.want {
				t.Fatalf("%d bytes: notice %+v", tc.size, n)
			}
			deadline := time.Now().Add(10 * time.Second)
			for e.uploadChunks(uA) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d bytes, %s: %d chunks left in the upload stream", tc.size, tc.want, e.uploadChunks(uA))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})

	t.Run("swept", func(t *testing.T) {
		e := newEnv(t, uA, uB, uC)
		e.cfg.UploadOrphanAfter = time.Nanosecond
		p, err := New(t.Context(), e.cfg, e.deps)
		if err != nil {
			t.Fatal(err)
		}
		a, b := e.units[uA], e.units[uB]
		partial := func(u *unit) {
			m := nats.NewMsg(protocol.UploadSubject(string(u.id)))
			m.Header.Set(protocol.HeaderUpload, protocol.SubmitStageName())
			m.Header.Set(protocol.HeaderChunk, "0")
			m.Header.Set(protocol.HeaderUploadSize, fmt.Sprint(2*protocol.UploadChunkSize))
			m.Data = make([]byte, protocol.UploadChunkSize)
			if _, err := u.js.PublishMsg(t.Context(), m); err != nil {
				t.Fatal(err)
			}
		}
		// A: an upload never submitted, and half an upload.
		if err := protocol.UploadStaged(t.Context(), a.js, uA, &protocol.Container{Data: make([]byte, 5<<20)}); err != nil {
			t.Fatal(err)
		}
		partial(a)
		// B: a submission waiting for the hub, with its upload; and half an upload.
		id, meta := doc(uB, uC)
		b.submit(t, id, b.build(t, meta, 5<<20))
		kept := e.uploadChunks(uB)
		partial(b)
		if err := p.sweepUploads(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := e.uploadChunks(uA); n != 0 {
			t.Errorf("A: %d chunks left", n)
		}
		if n := e.uploadChunks(uB); n != kept {
			t.Errorf("B: %d chunks left, want its submission's %d", n, kept)
		}
		e.run(e.deps)
		if n := b.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
			t.Fatalf("B's submission after the sweep: %+v", n)
		}
	})
}
