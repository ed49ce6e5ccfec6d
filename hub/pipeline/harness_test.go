package pipeline

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/events"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// env is a hub's pipeline on real components: an embedded NATS server with
// JetStream in operator mode, the shared embedded S3 gateway (versitygw), a
// SQLite index kept by a follower of the decision events (as the hub's),
// and a development CA.
type env struct {
	t     testing.TB
	srv   *broker.Server
	hc    *broker.HubConn // the hub's connections to EDX and STAGE
	nc    *nats.Conn
	js    jetstream.JetStream
	arch  *archive.Store
	ix    *index.Index
	reg   *registry.Registry // the shared unit registry
	ev    *events.Follower   // e.ix's
	ca    *pki.CA
	trust *pki.Trust
	hub   *pki.Signer
	tl    *tlog.Log // the hub's transparency log (POSIX, in the test's directory)
	tlKey note.Verifier
	units map[document.UnitID]*unit
	deps  Deps
	cfg   Config
	s3cfg archive.Config
}

type unit struct {
	id     document.UnitID
	signer *pki.Signer
	nc     *nats.Conn
	js     jetstream.JetStream // EDX, through the UNITS account's imports
	stage  *protocol.Stage     // large deliveries
	// kept are messages of the unit's consumer fetched (and acknowledged)
	// while the test waited for one of the other kind.
	kept []jetstream.Msg
}

var bucketSeq struct {
	sync.Mutex
	n int
}

func newEnv(t testing.TB, units ...document.UnitID) *env {
	t.Helper()
	return newEnvWith(t, envOptions{}, units...)
}

// envOptions size an env's JetStream.
type envOptions struct {
	maxStore int64 // the server's JetStream store; zero: broker.TestMaxStore
	streams  broker.StreamOptions
}

func newEnvWith(t testing.TB, o envOptions, units ...document.UnitID) *env {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.maxStore == 0 {
		o.maxStore = broker.TestMaxStore
	}
	srv, err := broker.Start(ctx, broker.Config{Listen: "127.0.0.1:-1", StoreDir: dir + "/js", KeysDir: dir + "/keys", MaxStore: o.maxStore}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &env{t: t, srv: srv, units: map[document.UnitID]*unit{}}
	e.hc = e.hubConn()
	e.nc, e.js = e.hc.NC, e.hc.JS
	if err := broker.EnsureStreams(ctx, e.js, e.hc.StageJS, o.streams); err != nil {
		t.Fatal(err)
	}
	ss, err := broker.StartStageService(ctx, e.hc, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Stop)
	endpoint, ak, sk := s3embed.ForTest(t)
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("pipeline-%d-%d", os.Getpid(), bucketSeq.n)
	bucketSeq.Unlock()
	e.s3cfg = archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: bucket}
	if e.arch, err = archive.New(ctx, e.s3cfg, log); err != nil {
		t.Fatal(err)
	}
	if e.ix, err = index.Open(ctx, index.Config{Path: dir + "/index.db"}, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ix.Close() })
	if e.reg, err = registry.Open(ctx, e.js, broker.BucketOptions{MaxBytes: 1 << 20}, e.arch, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.reg.Close)
	if e.ca, err = pki.InitCA(dir+"/pki", ""); err != nil {
		t.Fatal(err)
	}
	if e.trust, err = pki.LoadTrust(e.ca.RootsPath()); err != nil {
		t.Fatal(err)
	}
	if e.hub, err = pki.LoadSigner(e.ca.HubKeyPath(), e.ca.HubCertPath()); err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		e.addUnit(u)
	}
	e.cfg = Config{Workers: 4, AckWait: 2 * time.Second}
	e.ev = e.follow(e.ix, "test-index")
	e.tl, e.tlKey = openTestLog(t, dir+"/tlog")
	e.deps = Deps{JS: e.js, Stage: e.stage(e.hc), Archive: e.arch, Index: e.ix, Units: e.reg, Events: events.NewPublisher(e.js, "test"), Applied: e.ev,
		Trust: e.trust, Hub: e.hub, TLog: e.tl, Log: log}
	return e
}

// openTestLog opens a transparency log in dir, as the hub does (no TSA).
func openTestLog(t testing.TB, dir string) (*tlog.Log, note.Verifier) {
	t.Helper()
	skey, _, err := tlog.NewKey("edx.test/hub/" + strings.ToLower(rand.Text()[:8]))
	if err != nil {
		t.Fatal(err)
	}
	s, v, _, err := tlog.ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tlog.DirBackend(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tlog.Open(t.Context(), tlog.Config{BatchMaxAge: 10 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}, b, tlog.Deps{Signer: s, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l, v
}

// follow keeps ix with the decision events, through consumer, until the
// test ends; it returns once ix is complete.
func (e *env) follow(ix *index.Index, consumer string) *events.Follower {
	e.t.Helper()
	f, _ := e.follower(ix, consumer)
	return f
}

// hubConn connects as the hub does, to the EDX and STAGE accounts.
func (e *env) hubConn() *broker.HubConn {
	h, err := e.srv.ConnectHub(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(h.Close)
	return h
}

// stage binds the stage store over one of the hub's connections.
func (e *env) stage(h *broker.HubConn) jetstream.ObjectStore {
	obs, err := h.Stage(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return obs
}

// addUnit registers a unit in the index, issues its certificate and NATS
// credentials and creates its consumers, as edx unit add does.
func (e *env) addUnit(id document.UnitID) *unit {
	ctx := e.t.Context()
	kp, cp, err := e.ca.IssueUnit(id, "Đơn vị "+string(id), pki.ECDSAP256)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := pki.LoadSigner(kp, cp)
	if err != nil {
		e.t.Fatal(err)
	}
	e.putUnit(index.Unit{ID: id, Name: "Đơn vị " + string(id)})
	if err := broker.EnsureUnitConsumer(ctx, e.js, string(id), ""); err != nil {
		e.t.Fatal(err)
	}
	creds, err := e.srv.Keys().IssueUnitCreds(string(id), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	nc, js, stage, err := protocol.ConnectUnit(ctx, e.srv.ClientURL(), creds, id)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	u := &unit{id: id, signer: s, nc: nc, js: js, stage: stage}
	e.units[id] = u
	return u
}

// putUnit registers or changes a unit in the shared registry, as the hub
// does (hub/units.go), and in the index.
func (e *env) putUnit(u index.Unit) {
	e.t.Helper()
	ru, err := e.reg.Update(e.t.Context(), u.ID, func(registry.Unit, bool) (registry.Unit, error) {
		return registry.Unit{Unit: u}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.ix.PutUnit(e.t.Context(), ru.Unit); err != nil {
		e.t.Fatal(err)
	}
}

// run starts a pipeline and returns a function that stops it and waits.
func (e *env) run(deps Deps) (stop func()) { return e.runChecked(deps, true) }

// runChecked starts a pipeline; with check, an error from Run fails the test
// (a pipeline whose connection a test kills is not checked).
func (e *env) runChecked(deps Deps, check bool) (stop func()) {
	p, err := New(e.t.Context(), e.cfg, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && check {
				e.t.Errorf("pipeline: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// doc makes a valid document.json from a unit to recipients.
func doc(from document.UnitID, to ...document.UnitID) (document.ID, []byte) {
	d := document.Template(time.Now())
	d.From, d.To = from, to
	d.Subject = "Về việc triển khai kế hoạch chuyển đổi số năm 2027"
	b, _ := d.Marshal()
	return d.ID, b
}

func (u *unit) build(t testing.TB, meta []byte, size int) []byte {
	data := make([]byte, size)
	rand.Read(data)
	c, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: data}}, u.signer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// submit publishes a container as the unit, inline or staged as the agent does.
func (u *unit) submit(t testing.TB, id document.ID, data []byte) {
	t.Helper()
	if _, err := u.js.PublishMsg(t.Context(), u.submitMsg(t, id, data)); err != nil {
		t.Fatal(err)
	}
}

// submitMsg stages a large container and returns the submission message.
func (u *unit) submitMsg(t testing.TB, id document.ID, data []byte) *nats.Msg {
	t.Helper()
	sum := sha256.Sum256(data)
	c := &protocol.Container{DocumentID: id, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data}
	if len(data) > protocol.InlineLimit {
		if err := protocol.UploadStaged(t.Context(), u.js, u.id, c); err != nil {
			t.Fatal(err)
		}
	}
	return protocol.SubmitMsg(u.id, c)
}

// notice waits for the unit's next notice.
func (u *unit) notice(t testing.TB) *protocol.Notice {
	t.Helper()
	msg := u.next(t, true, 20*time.Second)
	if msg == nil {
		t.Fatalf("%s: no notice", u.id)
	}
	n, err := protocol.ParseNotice(&nats.Msg{Data: msg.Data()})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// delivery waits for the unit's next delivery.
func (u *unit) delivery(t testing.TB) jetstream.Msg {
	t.Helper()
	msg := u.next(t, false, 20*time.Second)
	if msg == nil {
		t.Fatalf("%s: no delivery", u.id)
	}
	return msg
}

// noNotice fails the test if the unit gets a notice within a second.
func (u *unit) noNotice(t testing.TB) {
	t.Helper()
	if m := u.next(t, true, time.Second); m != nil {
		t.Errorf("%s: a notice: %s", u.id, m.Data())
	}
}

// next returns the unit's next notice or delivery (as notice says),
// acknowledged, or nil when none comes within wait; messages of the other
// kind fetched meanwhile are kept for later.
func (u *unit) next(t testing.TB, notice bool, wait time.Duration) jetstream.Msg {
	t.Helper()
	for i, m := range u.kept {
		if protocol.IsNotice(m.Headers()) == notice {
			u.kept = append(u.kept[:i], u.kept[i+1:]...)
			return m
		}
	}
	cons, err := u.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(u.id)))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(wait); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(left))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			return nil
		}
		if err != nil {
			t.Fatalf("%s: %v", u.id, err)
		}
		if err := msg.DoubleAck(t.Context()); err != nil {
			t.Fatal(err)
		}
		if protocol.IsNotice(msg.Headers()) == notice {
			return msg
		}
		u.kept = append(u.kept, msg)
	}
}

// inStream counts the messages on subject in EDX_DELIVER (the hub's
// Trimmer is not running: what units acknowledged stays).
func (e *env) inStream(subject string) int {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), protocol.StreamDeliver)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		e.t.Fatal(err)
	}
	return int(info.State.Subjects[subject])
}

// notices counts the notices to a unit in EDX_DELIVER.
func (e *env) notices(u document.UnitID) int {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), protocol.StreamDeliver)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for seq := uint64(1); ; {
		m, err := s.GetMsg(e.t.Context(), seq, jetstream.WithGetMsgSubject(protocol.DeliverSubject(string(u))))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if protocol.IsNotice(m.Header) {
			n++
		}
		seq = m.Sequence + 1
	}
}

// trim removes from EDX_DELIVER what units acknowledged, as the hub does.
func (e *env) trim() {
	e.t.Helper()
	if _, err := broker.NewTrimmer(e.js, broker.TrimConfig{}, nil).Sweep(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
}

// deliveries counts the deliveries to a unit in EDX_DELIVER.
func (e *env) deliveries(u document.UnitID) int {
	e.t.Helper()
	return e.inStream(protocol.DeliverSubject(string(u))) - e.notices(u)
}

// objects lists archive keys under prefix.
func (e *env) objects(prefix string) []string {
	var keys []string
	for o, err := range e.arch.List(e.t.Context(), prefix) {
		if err != nil {
			e.t.Fatal(err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

func contains(keys []string, suffix string) bool {
	for _, k := range keys {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}
