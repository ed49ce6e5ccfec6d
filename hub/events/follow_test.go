package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/natstest"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

const (
	uA = document.UnitID("000.01.00.H29")
	uB = document.UnitID("000.02.00.H29")
)

// fx is a real JetStream (an embedded nats-server with the events stream as
// the hub declares it), a bucket of the shared S3 test gateway, and a
// development CA whose unit A signs documents and whose hub signs receipts.
type fx struct {
	t     *testing.T
	js    jetstream.JetStream
	arch  *archive.Store
	trust *pki.Trust
	hub   *pki.Signer
	unit  *pki.Signer
	pub   *Publisher
	log   *slog.Logger // the followers' (discarded unless set)
	// wait bounds how long a follower may take to complete its index
	// (default a minute).
	wait time.Duration
}

var bucketSeq struct {
	sync.Mutex
	n int
}

func newFx(t *testing.T) *fx {
	t.Helper()
	_, nc := natstest.Connect(t, true)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streams, _ := broker.StreamConfigs(broker.StreamOptions{EventsMaxBytes: 64 << 20})
	for _, c := range streams {
		if c.Name == protocol.StreamEvents {
			if _, err := js.CreateStream(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
	}
	endpoint, ak, sk := s3embed.ForTest(t)
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("events-%d-%d", os.Getpid(), bucketSeq.n)
	bucketSeq.Unlock()
	arch, err := archive.New(t.Context(), archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: bucket}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := pki.LoadTrust(ca.RootsPath())
	if err != nil {
		t.Fatal(err)
	}
	hub, err := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	kp, cp, err := ca.IssueUnit(uA, "Sở Nội vụ", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := pki.LoadSigner(kp, cp)
	if err != nil {
		t.Fatal(err)
	}
	return &fx{t: t, js: js, arch: arch, trust: trust, hub: hub, unit: unit, pub: NewPublisher(js, "test"), log: slog.New(slog.DiscardHandler), wait: time.Minute}
}

// accept archives a new document from A to B with its receipt, as the
// pipeline does, and returns its index record.
func (f *fx) accept(subject string) index.Record {
	f.t.Helper()
	d := document.Template(time.Now())
	d.From, d.To, d.Subject = uA, []document.UnitID{uB}, subject
	meta, _ := d.Marshal()
	data, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: []byte("%PDF-1.7 " + subject)}}, f.unit)
	if err != nil {
		f.t.Fatal(err)
	}
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: f.trust})
	if c == nil || !rep.Valid {
		f.t.Fatalf("container: %v", rep.Reasons)
	}
	key := projection.ContainerKey(d.ID)
	if _, err := f.arch.Put(f.t.Context(), key, data, container.Mimetype, nil); err != nil {
		f.t.Fatal(err)
	}
	rc := &container.Receipt{DocumentID: d.ID, From: d.From, To: d.To, ContainerSHA256: rep.ContainerSHA256,
		ContainerSize: int64(len(data)), ArchiveKey: key, AcceptedAt: time.Now().UTC().Truncate(time.Millisecond)}
	rb, err := container.SignReceipt(rc, f.hub)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.arch.Put(f.t.Context(), projection.ReceiptKey(d.ID), rb, "application/pkcs7-mime", nil); err != nil {
		f.t.Fatal(err)
	}
	return projection.Record(c, rep, rc, projection.ReceiptKey(d.ID))
}

// status archives a status of B on a document, as the pipeline records it.
func (f *fx) status(id document.ID, code document.StatusCode, flagged bool) index.StatusEntry {
	f.t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	e := index.StatusEntry{Status: document.Status{DocumentID: id, Unit: uB, Code: code, Time: now, Description: "Văn thư đã nhận"},
		Flagged: flagged, ReceivedAt: now}
	b, _ := projection.EncodeStatus(e, nil)
	if _, err := f.arch.Put(f.t.Context(), projection.StatusKey(&e.Status), b, "application/json", nil); err != nil {
		f.t.Fatal(err)
	}
	return e
}

func (f *fx) index() *index.Index {
	f.t.Helper()
	ix, err := index.Open(f.t.Context(), index.Config{Path: f.t.TempDir() + "/index.db"}, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { ix.Close() })
	return ix
}

// follow runs a follower of ix until stop or the end of the test, once ix
// is complete.
func (f *fx) follow(ix *index.Index, consumer string, reg prometheus.Registerer) (fl *Follower, stop func()) {
	f.t.Helper()
	fl, err := NewFollower(Config{Consumer: consumer}, Deps{JS: f.js, Index: ix, Archive: f.arch, Trust: f.trust,
		Log: f.log, Registerer: reg})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); fl.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	f.t.Cleanup(stop)
	select {
	case <-fl.Ready():
	case <-time.After(f.wait):
		f.t.Fatal("the follower did not start")
	}
	// Then until the index is complete (a rebuild goes on after the units).
	for deadline := time.Now().Add(f.wait); fl.Check() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			f.t.Fatalf("the index is not complete: %v", fl.Check())
		}
	}
	return fl, stop
}

// applied waits until fl has applied the event at seq.
func applied(t *testing.T, fl *Follower, seq uint64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if fl.WaitApplied(t.Context(), seq) {
			return
		}
	}
	t.Fatalf("event %d never applied", seq)
}

// snapshot is what an index holds, as searches and document pages show it.
func snapshot(t *testing.T, ix *index.Index) string {
	t.Helper()
	page, err := ix.Search(t.Context(), index.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "total %d\n", page.Total)
	for _, s := range page.Items {
		det, err := ix.Get(t.Context(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(det)
		b.Write(j)
		b.WriteByte('\n')
	}
	rej, _ := ix.ListRejected(t.Context(), "", 100)
	for _, r := range rej {
		fmt.Fprintf(&b, "rejected %s %v\n", r.Ref, r.Reasons.Codes())
	}
	units, _ := ix.ListUnits(t.Context())
	for _, u := range units {
		fmt.Fprintf(&b, "unit %s %s %v\n", u.ID, u.Name, u.Disabled)
	}
	return b.String()
}

// again publishes an event once more under another Nats-Msg-Id, past the
// stream's de-duplication, as a second hub deciding the same would.
func (f *fx) again(kind Kind, seq uint64) uint64 {
	f.t.Helper()
	m, err := f.js.Stream(f.t.Context(), protocol.StreamEvents)
	if err != nil {
		f.t.Fatal(err)
	}
	raw, err := m.GetMsg(f.t.Context(), seq)
	if err != nil {
		f.t.Fatal(err)
	}
	msg := nats.NewMsg(Subject(kind))
	msg.Data = raw.Data
	msg.Header.Set(protocol.HeaderMsgID, fmt.Sprintf("again-%d", seq))
	ack, err := f.js.PublishMsg(f.t.Context(), msg)
	if err != nil {
		f.t.Fatal(err)
	}
	return ack.Sequence
}

// TestApplyTwice: every kind of event applied a second time (a second
// hub's publish of the same decision, a redelivery) changes nothing.
func TestApplyTwice(t *testing.T) {
	f := newFx(t)
	ix := f.index()
	fl, _ := f.follow(ix, "twice", nil)
	ctx := t.Context()
	rec := f.accept("Về việc triển khai chuyển đổi số")
	var seqs []uint64
	kinds := []Kind{Unit, Accepted, Status, Status, Rejected}
	for _, publish := range []func() (uint64, error){
		func() (uint64, error) {
			return f.pub.UnitChanged(ctx, index.Unit{ID: uB, Name: "Sở Tư pháp", Created: time.Now().UTC(), At: time.Now().UTC()})
		},
		func() (uint64, error) { return f.pub.Accepted(ctx, rec) },
		func() (uint64, error) {
			return f.pub.Status(ctx, f.status(rec.Doc.ID, document.StatusDelivered, false))
		},
		func() (uint64, error) { return f.pub.Status(ctx, f.status(rec.Doc.ID, document.StatusFinished, true)) },
		func() (uint64, error) {
			return f.pub.Rejected(ctx, index.Rejected{Ref: "sub-1", Sender: uA, At: time.Now().UTC(),
				Reasons: reason.List{{Code: reason.RecipientUnknown, Message: "to[0]"}}, ArchiveKey: "rejected/x/reasons.json"})
		},
	} {
		seq, err := publish()
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	applied(t, fl, seqs[len(seqs)-1])
	once := snapshot(t, ix)
	if !strings.Contains(once, "total 1") || !strings.Contains(once, `"flagged":true`) || !strings.Contains(once, "rejected sub-1") ||
		!strings.Contains(once, "Sở Tư pháp") {
		t.Fatalf("after the events:\n%s", once)
	}
	// The same events again, in reverse order.
	var last uint64
	for i := len(seqs) - 1; i >= 0; i-- {
		last = f.again(kinds[i], seqs[i])
	}
	applied(t, fl, last)
	if twice := snapshot(t, ix); twice != once {
		t.Errorf("applied twice:\n%s\nonce:\n%s", twice, once)
	}
	// A publish retried (same Nats-Msg-Id) is dropped by the stream.
	if seq, err := f.pub.Accepted(ctx, rec); err != nil || seq != seqs[1] {
		t.Errorf("a retried publish: seq %d (%v), want %d", seq, err, seqs[1])
	}
}

// TestStatusBeforeDocument: a status event that comes before its
// document's event (another hub crashed between archiving the document and
// publishing it) waits for the document; one whose document event never
// comes is applied once the follower has read the document from the
// archive. Either way the index converges to what the events in order give.
func TestStatusBeforeDocument(t *testing.T) {
	f := newFx(t)
	ctx := t.Context()
	// The follower starts first: its index is rebuilt from the archive,
	// empty then.
	ix := f.index()
	reg := prometheus.NewRegistry()
	fl, _ := f.follow(ix, "out-of-order", reg)
	x := f.accept("Văn bản X")
	y := f.accept("Văn bản Y")
	sx := f.status(x.Doc.ID, document.StatusDelivered, false)
	sy := f.status(y.Doc.ID, document.StatusDelivered, false)
	// What the same records give in order.
	inOrder := f.index()
	if err := inOrder.PutDocuments(ctx, []index.Record{x, y}); err != nil {
		t.Fatal(err)
	}
	if err := inOrder.PutStatuses(ctx, []index.StatusEntry{sx, sy}); err != nil {
		t.Fatal(err)
	}

	// The events come as: status X, X, status Y; Y's document event never
	// comes.
	var seqs []uint64
	for i, publish := range []func() (uint64, error){
		func() (uint64, error) { return f.pub.Status(ctx, sx) },
		func() (uint64, error) { return f.pub.Accepted(ctx, x) },
		func() (uint64, error) { return f.pub.Status(ctx, sy) },
	} {
		seq, err := publish()
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
		if i == 0 {
			// X's event comes only once its status was delivered and
			// could not be applied.
			c, err := f.js.Consumer(ctx, protocol.StreamEvents, "out-of-order")
			if err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); ; {
				if time.Now().After(deadline) {
					t.Fatal("the status was never delivered")
				}
				info, err := c.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.Delivered.Stream >= seq && info.AckFloor.Stream < seq {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	for _, seq := range seqs {
		applied(t, fl, seq)
	}
	want := snapshot(t, inOrder)
	if !strings.Contains(want, "total 2") || strings.Count(want, `"code":"01"`) != 2 {
		t.Fatalf("in order:\n%s", want)
	}
	if got := snapshot(t, ix); got != want {
		t.Errorf("out of order:\n%s\nin order:\n%s", got, want)
	}
	if n := gauge(t, reg, "edx_hub_events_unapplied_total"); n != 0 {
		t.Errorf("%v events unapplied", n)
	}
}

// TestRebuildWhenEventsGone: a hub whose index missed events the stream no
// longer holds (max age passed while it was down, or the stream was full)
// rebuilds its index from the archive, then follows; one whose consumer is
// gone but whose events are still held follows again from its index's
// position, without a rebuild.
func TestRebuildWhenEventsGone(t *testing.T) {
	f := newFx(t)
	ctx := t.Context()
	ix := f.index()
	reg := prometheus.NewRegistry()
	_, stop := f.follow(ix, "away", reg)
	if n := gauge(t, reg, "edx_hub_index_rebuilds_total"); n != 1 {
		t.Fatalf("a new index: %v rebuilds, want 1", n)
	}
	stop()

	// Its consumer removed while it is down: it follows again from its index.
	x := f.accept("Văn bản X")
	if _, err := f.pub.Accepted(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := f.js.DeleteConsumer(ctx, protocol.StreamEvents, "away"); err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	fl, stop := f.follow(ix, "away", reg)
	seq, _ := f.pub.Accepted(ctx, x)
	applied(t, fl, seq)
	if _, err := ix.Get(ctx, x.Doc.ID); err != nil {
		t.Fatalf("X after the consumer was made again: %v", err)
	}
	if n := gauge(t, reg, "edx_hub_index_rebuilds_total"); n != 0 {
		t.Errorf("%v rebuilds with the events still held", n)
	}
	stop()

	// Events it has not applied are dropped from the stream.
	y := f.accept("Văn bản Y")
	if _, err := f.pub.Accepted(ctx, y); err != nil {
		t.Fatal(err)
	}
	sy := f.status(y.Doc.ID, document.StatusDelivered, false)
	if _, err := f.pub.Status(ctx, sy); err != nil {
		t.Fatal(err)
	}
	s, err := f.js.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	f.follow(ix, "away", reg)
	if n := gauge(t, reg, "edx_hub_index_rebuilds_total"); n != 1 {
		t.Errorf("%v rebuilds after events were lost, want 1", n)
	}
	det, err := ix.Get(ctx, y.Doc.ID)
	if err != nil || len(det.History) != 1 {
		t.Fatalf("Y after the rebuild: %v %+v", err, det)
	}
}

// TestDecode: an event of a newer schema, or without its record, is
// refused; MsgID is derived from what an event reports.
func TestDecode(t *testing.T) {
	if _, err := Decode([]byte(`{"v":2,"kind":"unit","unit":{"id":"000.01.00.H29"}}`)); err == nil {
		t.Error("a newer event decoded")
	}
	if _, err := Decode([]byte(`{"v":1,"kind":"accepted"}`)); err == nil {
		t.Error("an accepted event without its document decoded")
	}
	st := index.StatusEntry{Status: document.Status{DocumentID: "01JZ0000000000000000000000", Unit: uB, Code: "01", Time: time.Unix(1, 5)}}
	e1, e2 := Event{Kind: Status, Status: &st}, Event{Kind: Status, Status: &st, Hub: "other", At: time.Now()}
	if e1.MsgID() != e2.MsgID() || e1.MsgID() != "status.01JZ0000000000000000000000.000.02.00.H29.01.1000000005" {
		t.Errorf("msg ids %q %q", e1.MsgID(), e2.MsgID())
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}
