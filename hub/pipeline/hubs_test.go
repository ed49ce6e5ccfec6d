package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/events"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// otherHub is another hub on the env's NATS server and S3 bucket: its own
// connection, index (with the env's units registered), follower of the
// decision events, and pipeline dependencies.
type otherHub struct {
	e        *env
	name     string
	ix       *index.Index
	f        *events.Follower
	deps     Deps
	reg      *prometheus.Registry
	stopOnce func()
}

func (e *env) otherHub(name string) *otherHub {
	e.t.Helper()
	ix, err := index.Open(e.t.Context(), index.Config{Path: e.t.TempDir() + "/" + name + ".db"}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ix.Close() })
	for id := range e.units {
		if err := ix.PutUnit(e.t.Context(), index.Unit{ID: id, Name: "Đơn vị " + string(id), Created: time.Now()}); err != nil {
			e.t.Fatal(err)
		}
	}
	h := &otherHub{e: e, name: name, ix: ix, reg: prometheus.NewRegistry()}
	hc := e.hubConn()
	h.deps = e.deps
	h.deps.JS, h.deps.Stage, h.deps.Index = hc.JS, e.stage(hc), ix
	h.deps.Events = events.NewPublisher(hc.JS, name)
	h.deps.Metrics = NewMetrics(h.reg)
	h.follow()
	return h
}

// follow starts following the decision events (again) with the hub's
// consumer, and waits until its index is complete.
func (h *otherHub) follow() {
	f, stop := h.e.follower(h.ix, "index-"+h.name)
	h.f, h.stopOnce = f, stop
	h.deps.Applied = f
}

// stopFollowing stops the hub's follower (its consumer stays).
func (h *otherHub) stopFollowing() { h.stopOnce() }

// follower is env.follow with a way to stop it before the test ends.
func (e *env) follower(ix *index.Index, consumer string) (*events.Follower, func()) {
	e.t.Helper()
	f, err := events.NewFollower(events.Config{Consumer: consumer}, events.Deps{JS: e.js, Index: ix, Archive: e.arch, Trust: e.trust,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	select {
	case <-f.Ready():
	case <-time.After(30 * time.Second):
		e.t.Fatal("the index did not start following the decision events")
	}
	// Then until the index is complete (a rebuild goes on after the units).
	for deadline := time.Now().Add(60 * time.Second); f.Check() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("the index is not complete: %v", f.Check())
		}
	}
	return f, stop
}

// eventually polls check until it returns nil, failing the test with its
// last error after a while (no timed assertion: the deadline only ends a
// test that would otherwise hang).
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = check(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// history lists a document's statuses in an index as unit:code.
func history(ix *index.Index, id document.ID) ([]string, error) {
	det, err := ix.Get(context.Background(), id)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range det.History {
		out = append(out, fmt.Sprintf("%s:%s:%v", h.Unit, h.Code, h.Flagged))
	}
	return out, nil
}

// snapshot is everything a search and a document page show, from one index.
func snapshot(t *testing.T, ix *index.Index) string {
	t.Helper()
	page, err := ix.Search(t.Context(), index.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "total %d\n", page.Total)
	for _, h := range page.Items {
		det, err := ix.Get(t.Context(), h.ID)
		if err != nil {
			t.Fatal(err)
		}
		det.RawMeta = nil
		for i := range det.History {
			det.History[i].ReceivedAt = det.History[i].ReceivedAt.UTC()
		}
		j, _ := json.Marshal(det)
		b.Write(j)
		b.WriteByte('\n')
	}
	for _, q := range []index.Query{{Text: "chuyen doi so", Limit: 100}, {From: uA, Limit: 100}, {To: uB, Limit: 100}, {Status: document.StatusDelivered, Limit: 100}} {
		page, err := ix.Search(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%+v: %d", q, page.Total)
		for _, h := range page.Items {
			fmt.Fprintf(&b, " %s", h.ID)
		}
		b.WriteByte('\n')
	}
	rej, err := ix.ListRejected(t.Context(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rej {
		fmt.Fprintf(&b, "rejected %s %s %s %v\n", r.Ref, r.Sender, r.ArchiveKey, r.Reasons.Codes())
	}
	return b.String()
}

// TestTwoHubsOneRepository: two hubs' pipelines on one NATS server and one
// S3 bucket, each with its own index.
//
//   - A document hub 1 accepts is in hub 2's index (search finds it),
//     though hub 2's pipeline never ran.
//   - With hub 2's index behind (its follower stopped) and only hub 2's
//     pipeline running, a status on a document hub 1 accepted is recorded,
//     not refused, judged from the archive; so is a reply naming it; both
//     reach hub 1's index, and hub 2's once it follows again.
//   - A status hub 2 refuses is archived under rejected/ and listed as
//     rejected in both indexes.
//   - A third hub, its index empty, catches up from the archive and the
//     events and answers every search as the others do.
func TestTwoHubsOneRepository(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.cfg.MaxBackoff = 300 * time.Millisecond
	h2 := e.otherHub("hub2")
	stop1 := e.run(e.deps)
	a, b := e.units[uA], e.units[uB]

	x, meta := doc(uA, uB)
	a.submit(t, x, a.build(t, meta, 2<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != x {
		t.Fatalf("notice %+v", n)
	}
	eventually(t, "hub 2's index has the document hub 1 accepted", func() error {
		page, err := h2.ix.Search(t.Context(), index.Query{Text: "chuyển đổi số", Limit: 10})
		if err != nil {
			return err
		}
		if page.Total != 1 || page.Items[0].ID != x {
			return fmt.Errorf("search finds %d documents", page.Total)
		}
		return nil
	})

	// Hub 2's index falls behind; hub 1 accepts Y and stops; only hub 2's
	// pipeline runs.
	h2.stopFollowing()
	y, meta := doc(uA, uB)
	a.submit(t, y, a.build(t, meta, 2<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != y {
		t.Fatalf("notice %+v", n)
	}
	stop1()
	if _, err := h2.ix.Get(t.Context(), y); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("hub 2's index has Y already (%v): the test needs it behind", err)
	}
	// (Hub 2's own index, stopped, would never apply what hub 2 decides:
	// its pipeline does not wait for it.)
	h2.deps.Applied = nil
	e.runChecked(h2.deps, true)
	b.status(t, &document.Status{DocumentID: y, Unit: uB, Time: time.Now().UTC(), Code: document.StatusDelivered})
	if n := a.notice(t); n.Type != protocol.NoticeStatus || n.DocumentID != y || n.Status.Code != document.StatusDelivered {
		t.Fatalf("A's notice of B's status: %s %v", n.Type, n.Reasons.Codes())
	}
	reply, rmeta := referring(uB, document.BusinessNew, y, uA)
	b.submit(t, reply, b.build(t, rmeta, 1<<10))
	if n := b.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != reply {
		t.Fatalf("B's reply to Y on hub 2: %s %v", n.Type, n.Reasons.Codes())
	}
	if got := counter(t, h2.reg, "edx_hub_judged_from_archive_total"); got < 2 {
		t.Errorf("hub 2 judged %v messages from the archive, want the status and the reply", got)
	}
	// C is no party to Y: refused, archived under rejected/, listed.
	c := e.units[uC]
	c.status(t, &document.Status{DocumentID: y, Unit: uC, Time: time.Now().UTC(), Code: document.StatusDelivered})
	c.refused(t, reason.RecipientUnknown)
	if keys := e.objects("rejected/"); !slices.ContainsFunc(keys, func(k string) bool {
		return strings.Contains(k, "/status-"+string(y)+"-") && strings.HasSuffix(k, "/reasons.json")
	}) {
		t.Errorf("the refused status is not archived: %v", keys)
	}

	want := []string{string(uB) + ":01:false"}
	for _, ix := range []*index.Index{e.ix} {
		eventually(t, "hub 1's index has B's status", func() error {
			got, err := history(ix, y)
			if err != nil || !slices.Equal(got, want) {
				return fmt.Errorf("history %v (%v)", got, err)
			}
			return nil
		})
	}
	h2.follow()
	eventually(t, "hub 2's index, following again, has Y, its status and the reply", func() error {
		got, err := history(h2.ix, y)
		if err != nil || !slices.Equal(got, want) {
			return fmt.Errorf("history %v (%v)", got, err)
		}
		if _, err := h2.ix.Get(t.Context(), reply); err != nil {
			return err
		}
		if rej, err := h2.ix.ListRejected(t.Context(), uC, 10); err != nil || len(rej) != 1 {
			return fmt.Errorf("rejected %v (%v)", rej, err)
		}
		return nil
	})

	// A third hub joins with an empty index.
	h3, err := index.Open(t.Context(), index.Config{Path: t.TempDir() + "/hub3.db"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h3.Close() })
	e.follower(h3, "index-hub3")
	want1 := snapshot(t, e.ix)
	if !strings.Contains(want1, "total 3") {
		t.Fatalf("hub 1's index:\n%s", want1)
	}
	for name, ix := range map[string]*index.Index{"hub 2": h2.ix, "hub 3": h3} {
		eventually(t, name+" answers as hub 1", func() error {
			if got := snapshot(t, ix); got != want1 {
				return fmt.Errorf("\n%s\nhub 1:\n%s", got, want1)
			}
			return nil
		})
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := 0.0
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

// TestSharedConsumersDeclaredOnce: the pipeline's consumers every hub
// shares are created with the settings of the first hub; a hub configured
// otherwise uses them as they are (it used to overwrite them, whichever
// hub started last winning), unless started to update them.
func TestSharedConsumersDeclaredOnce(t *testing.T) {
	e := newEnv(t, uA, uB)
	e.cfg.AckWait, e.cfg.MaxAckPending = 2*time.Second, 40
	a := e.units[uA]
	send := func() {
		t.Helper()
		id, meta := doc(uA, uB)
		a.submit(t, id, a.build(t, meta, 1<<10))
		if n := a.notice(t); n.Type != protocol.NoticeAccepted {
			t.Fatalf("notice %+v", n)
		}
	}
	stop := e.run(e.deps)
	send()
	stop()
	settings := func() string {
		var out []string
		for _, s := range []string{protocol.StreamSubmit, protocol.StreamStatus} {
			name := broker.HubConsumerConfigs(0, 0)[s].Durable
			c, err := e.js.Consumer(t.Context(), s, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := c.CachedInfo().Config
			out = append(out, fmt.Sprintf("%s %s %d", name, cfg.AckWait, cfg.MaxAckPending))
		}
		return strings.Join(out, ", ")
	}
	first := settings()
	if first != "edx-hub 2s 40, edx-hub-status 2s 40" {
		t.Fatalf("consumers as created: %s", first)
	}

	// Another hub with other settings: the consumers stay; it still works.
	var logs bytes.Buffer
	other := e.deps
	other.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e.cfg.AckWait, e.cfg.MaxAckPending = 7*time.Second, 3
	stop = e.runChecked(other, true)
	send()
	stop()
	if got := settings(); got != first {
		t.Errorf("a hub configured otherwise changed the shared consumers: %s, were %s", got, first)
	}
	for _, want := range []string{"ack_wait: existing 2s, configured 7s", "max_ack_pending: existing 40, configured 3", "-update-consumers"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the warning does not say %q:\n%s", want, logs.String())
		}
	}

	// The operator asks one hub to update them.
	e.cfg.UpdateConsumers = true
	stop = e.run(e.deps)
	send()
	stop()
	if got := settings(); got != "edx-hub 7s 3, edx-hub-status 7s 3" {
		t.Errorf("after -update-consumers: %s", got)
	}
}

// TestEventsOnceEach: after a crash between publishing the accepted event
// and routing, the replayed submission publishes the same event (same
// Nats-Msg-Id): the stream keeps one accepted event per document.
func TestEventsOnceEach(t *testing.T) {
	e := newEnv(t, uA, uB)
	deps := e.deps
	h := e.hubConn()
	deps.JS, deps.Stage, deps.Events = h.JS, e.stage(h), events.NewPublisher(h.JS, "crashing")
	crashed := make(chan struct{})
	var once sync.Once
	deps.hook = func(s string) error {
		if s == "published" {
			var err error
			once.Do(func() { close(crashed); err = errors.New("crash") })
			return err
		}
		return nil
	}
	stop := e.runChecked(deps, false)
	a := e.units[uA]
	id, meta := doc(uA, uB)
	a.submit(t, id, a.build(t, meta, 4<<10))
	<-crashed
	h.Close()
	stop()
	e.run(e.deps)
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	e.waitIdle()
	if n := e.acceptedEvents(id); n != 1 {
		t.Errorf("%d accepted events for %s, want 1", n, id)
	}
}

// acceptedEvents counts the accepted events in EDX_EVENTS for a document.
func (e *env) acceptedEvents(id document.ID) int {
	e.t.Helper()
	c, err := e.js.OrderedConsumer(e.t.Context(), protocol.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.Subject(events.Accepted)}})
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for {
		m, err := c.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			return n
		}
		ev, err := events.Decode(m.Data())
		if err != nil {
			e.t.Fatal(err)
		}
		if ev.Document.ID == id {
			n++
		}
	}
}

// TestStatusCrashReplay: the hub stops dead after archiving a status and
// publishing its event, before telling the sender; the status comes back to
// another hub process, which records it again to the same result: one
// archived status, one status event, one entry in the index, one notice.
func TestStatusCrashReplay(t *testing.T) {
	e := newEnv(t, uA, uB)
	stop := e.run(e.deps)
	a, b := e.units[uA], e.units[uB]
	id, meta := doc(uA, uB)
	a.submit(t, id, a.build(t, meta, 1<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	stop()

	deps := e.deps
	h := e.hubConn()
	deps.JS, deps.Stage, deps.Events = h.JS, e.stage(h), events.NewPublisher(h.JS, "crashing")
	crashed := make(chan struct{})
	var once sync.Once
	deps.hook = func(s string) error {
		var err error
		if s == "status published" {
			once.Do(func() { close(crashed); err = errors.New("crash") })
		}
		return err
	}
	stop = e.runChecked(deps, false)
	b.status(t, &document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC(), Code: document.StatusDelivered})
	<-crashed
	h.Close()
	stop()
	e.run(e.deps)
	if n := a.notice(t); n.Type != protocol.NoticeStatus || n.Status.Code != document.StatusDelivered {
		t.Fatalf("A's notice %+v", n)
	}
	if keys := e.objects(projection.StatusPrefix(id)); len(keys) != 1 {
		t.Errorf("archived statuses %v", keys)
	}
	eventually(t, "one status in the index", func() error {
		got, err := history(e.ix, id)
		if err != nil || len(got) != 1 {
			return fmt.Errorf("history %v (%v)", got, err)
		}
		return nil
	})
	c, err := e.js.OrderedConsumer(t.Context(), protocol.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.Subject(events.Status)}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := c.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err != nil {
			break
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d status events, want 1", n)
	}
	a.noNotice(t)
}
