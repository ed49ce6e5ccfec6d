package broker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

const (
	unitA = "000.00.00.H29"
	unitB = "000.00.00.H41"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

type env struct {
	srv      *broker.Server
	storeDir string
	keysDir  string
	hub      *nats.Conn
	hubJS    jetstream.JetStream
}

func startServer(t testing.TB, storeDir, keysDir string) *broker.Server {
	t.Helper()
	srv, err := broker.Start(t.Context(), broker.Config{
		Listen:   "127.0.0.1:-1",
		StoreDir: storeDir,
		KeysDir:  keysDir,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// newEnv starts a server, connects the hub and creates the streams and the
// consumers of unitA and unitB.
func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{storeDir: t.TempDir(), keysDir: t.TempDir()}
	e.srv = startServer(t, e.storeDir, e.keysDir)
	t.Cleanup(e.srv.Shutdown)
	e.hub, e.hubJS = hubConn(t, e.srv)
	ctx := t.Context()
	if err := broker.EnsureStreams(ctx, e.hubJS, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{unitA, unitB} {
		if err := broker.EnsureUnitConsumers(ctx, e.hubJS, u); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func hubConn(t testing.TB, srv *broker.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	creds, err := srv.Keys().IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentialBytes(creds), nats.Name("hub"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// unitClient is a unit's connection, recording the asynchronous errors the
// server sends it (permission violations).
type unitClient struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu   sync.Mutex
	errs []error
	errc chan error
}

func connectUnit(t testing.TB, url string, creds []byte, unit string) (*unitClient, error) {
	u := &unitClient{errc: make(chan error, 100)}
	nc, err := nats.Connect(url,
		nats.UserCredentialBytes(creds),
		nats.CustomInboxPrefix(protocol.InboxPrefix(unit)),
		nats.Name("agent "+unit),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			u.mu.Lock()
			u.errs = append(u.errs, err)
			u.mu.Unlock()
			select {
			case u.errc <- err:
			default:
			}
		}),
	)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	u.nc = nc
	u.js, err = jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return u, nil
}

func (e *env) unit(t testing.TB, unit string) *unitClient {
	t.Helper()
	creds, err := e.srv.Keys().IssueUnitCreds(unit, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u, err := connectUnit(t, e.srv.ClientURL(), creds, unit)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// waitPermErr waits for a permissions violation naming subject.
func (u *unitClient) waitPermErr(t *testing.T, subject string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-u.errc:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-timeout:
			u.mu.Lock()
			defer u.mu.Unlock()
			t.Fatalf("no permissions violation for %q; async errors: %v", subject, u.errs)
		}
	}
}

func lastMsg(t *testing.T, js jetstream.JetStream, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(t.Context(), subject)
	if err != nil {
		t.Fatalf("last message on %s in %s: %v", subject, stream, err)
	}
	return m
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for range 2 {
		if err := broker.EnsureStreams(ctx, e.hubJS, broker.StreamOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := broker.EnsureUnitConsumers(ctx, e.hubJS, unitA); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]jetstream.RetentionPolicy{
		protocol.StreamSubmit:  jetstream.WorkQueuePolicy,
		protocol.StreamDeliver: jetstream.LimitsPolicy,
		protocol.StreamStatus:  jetstream.LimitsPolicy,
		protocol.StreamNotice:  jetstream.LimitsPolicy,
	}
	for name, ret := range want {
		s, err := e.hubJS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Retention != ret || cfg.Storage != jetstream.FileStorage || cfg.MaxMsgSize != broker.DefaultMaxPayload {
			t.Errorf("%s: retention %v storage %v max msg %d", name, cfg.Retention, cfg.Storage, cfg.MaxMsgSize)
		}
		if cfg.Duplicates != broker.DefaultDuplicates {
			t.Errorf("%s: duplicates %v", name, cfg.Duplicates)
		}
	}
	obs, err := e.hubJS.ObjectStore(ctx, protocol.StageBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := obs.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != broker.DefaultStageTTL {
		t.Errorf("stage ttl %v", st.TTL())
	}
	c, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.DeliverConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	if cc := c.CachedInfo().Config; cc.FilterSubject != protocol.DeliverSubject(unitA) ||
		cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxDeliver != -1 || cc.AckWait != broker.UnitAckWait {
		t.Errorf("deliver consumer config %+v", cc)
	}

	// Changing an option updates the streams in place.
	if err := broker.EnsureStreams(ctx, e.hubJS, broker.StreamOptions{DeliverMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s, err := e.hubJS.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.MaxAge != time.Hour || cfg.Duplicates != time.Hour {
		t.Errorf("after update: max age %v duplicates %v", cfg.MaxAge, cfg.Duplicates)
	}
}

func TestEnsureStreamsRejectsTooLargeMessages(t *testing.T) {
	e := newEnv(t)
	err := broker.EnsureStreams(t.Context(), e.hubJS, broker.StreamOptions{MaxMsgSize: 2 * broker.DefaultMaxPayload})
	if err == nil {
		t.Fatal("max_msg_size above max_payload accepted")
	}
}

func TestUnitPublishOwnSubjects(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()

	ack, err := a.js.Publish(ctx, protocol.SubmitSubject(unitA), []byte("submission"), jetstream.WithMsgID("doc-1"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != protocol.StreamSubmit {
		t.Fatalf("submission stored in %s", ack.Stream)
	}
	// A retry with the same Nats-Msg-Id is de-duplicated.
	ack2, err := a.js.Publish(ctx, protocol.SubmitSubject(unitA), []byte("submission"), jetstream.WithMsgID("doc-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack2.Duplicate || ack2.Sequence != ack.Sequence {
		t.Fatalf("retry not de-duplicated: %+v", ack2)
	}
	if m := lastMsg(t, e.hubJS, protocol.StreamSubmit, protocol.SubmitSubject(unitA)); string(m.Data) != "submission" {
		t.Fatalf("stored %q", m.Data)
	}

	if _, err := a.js.Publish(ctx, protocol.StatusSubject(unitA), []byte("01"), jetstream.WithMsgID("doc-1/01")); err != nil {
		t.Fatal(err)
	}
	if m := lastMsg(t, e.hubJS, protocol.StreamStatus, protocol.StatusSubject(unitA)); string(m.Data) != "01" {
		t.Fatalf("stored %q", m.Data)
	}
}

func TestUnitDeniedOtherSubjects(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)

	denied := []string{
		protocol.SubmitSubject(unitB),
		protocol.StatusSubject(unitB),
		protocol.DeliverSubject(unitA), // only the hub delivers
		protocol.NoticeSubject(unitA),
		protocol.SubjectSubmitPrefix + "000.00.00", // a prefix of its own unit id
		"$JS.API.STREAM.CREATE.X",
		"$JS.API.STREAM.PURGE." + protocol.StreamSubmit,
		"$JS.API.CONSUMER.CREATE." + protocol.StreamDeliver,
		"$JS.API.CONSUMER.DURABLE.CREATE." + protocol.StreamDeliver + ".x",
		"$JS.API.CONSUMER.DELETE." + protocol.StreamDeliver + "." + protocol.DeliverConsumer(unitA),
		"$JS.API.STREAM.PURGE.OBJ_" + protocol.StageBucket,
	}
	for _, subj := range denied {
		if err := a.nc.Publish(subj, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, subj)
	}
	// A JetStream publish gets no ack: the server drops the message and
	// reports the violation asynchronously, so the call fails on its deadline.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := a.js.Publish(ctx, protocol.SubmitSubject(unitB), []byte("forged"), jetstream.WithMsgID("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("jetstream publish on another unit's subject: %v", err)
	}
	a.waitPermErr(t, protocol.SubmitSubject(unitB))

	// Nothing reached the streams under unitB's subjects.
	for _, c := range []struct{ stream, subject string }{
		{protocol.StreamSubmit, protocol.SubmitSubject(unitB)},
		{protocol.StreamStatus, protocol.StatusSubject(unitB)},
	} {
		s, err := e.hubJS.Stream(t.Context(), c.stream)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetLastMsgForSubject(t.Context(), c.subject); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("%s: %v", c.subject, err)
		}
	}

	// Core subscriptions outside its inbox are denied too.
	for _, subj := range []string{protocol.DeliverSubject(unitB), "edx.>", ">", protocol.InboxPrefix(unitB) + ".>", "_INBOX.>"} {
		if _, err := a.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, subj)
	}
}

func TestUnitConsumesOwnDeliveries(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()

	for _, m := range []struct{ subject, id, body string }{
		{protocol.DeliverSubject(unitA), "doc-1/" + unitA, "delivery"},
		{protocol.NoticeSubject(unitA), "doc-2/accepted", "notice"},
	} {
		if _, err := e.hubJS.Publish(ctx, m.subject, []byte(m.body), jetstream.WithMsgID(m.id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ stream, consumer, body string }{
		{protocol.StreamDeliver, protocol.DeliverConsumer(unitA), "delivery"},
		{protocol.StreamNotice, protocol.NoticeConsumer(unitA), "notice"},
	} {
		cons, err := a.js.Consumer(ctx, c.stream, c.consumer)
		if err != nil {
			t.Fatalf("%s: %v", c.consumer, err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for m := range batch.Messages() {
			got = append(got, string(m.Data()))
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		if batch.Error() != nil {
			t.Fatal(batch.Error())
		}
		if len(got) != 1 || got[0] != c.body {
			t.Fatalf("%s: fetched %q", c.consumer, got)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Consumer != 1 {
			t.Fatalf("%s after ack: pending %d ack pending %d ack floor %d", c.consumer, info.NumPending, info.NumAckPending, info.AckFloor.Consumer)
		}
	}
	if len(a.errs) != 0 {
		t.Fatalf("async errors: %v", a.errs)
	}
}

func TestUnitCannotConsumeOthers(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()
	if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitB), []byte("for B"), jetstream.WithMsgID("doc-1/"+unitB)); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ stream, consumer string }{
		{protocol.StreamDeliver, protocol.DeliverConsumer(unitB)},
		{protocol.StreamNotice, protocol.NoticeConsumer(unitB)},
	} {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := a.js.Consumer(cctx, c.stream, c.consumer)
		cancel()
		if err == nil {
			t.Fatalf("unit A looked up %s", c.consumer)
		}
		a.waitPermErr(t, "$JS.API.CONSUMER.INFO."+c.stream+"."+c.consumer)

		// A raw pull request, skipping the consumer lookup, is denied too.
		next := "$JS.API.CONSUMER.MSG.NEXT." + c.stream + "." + c.consumer
		_, err = a.nc.Request(next, []byte(`{"batch":1,"expires":1000000000}`), 500*time.Millisecond)
		if err == nil {
			t.Fatalf("pull from %s answered", c.consumer)
		}
		a.waitPermErr(t, next)
	}

	// B's delivery is still there, undelivered.
	c, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.DeliverConsumer(unitB))
	if err != nil {
		t.Fatal(err)
	}
	if info := c.CachedInfo(); info.NumPending != 1 || info.Delivered.Consumer != 0 {
		t.Fatalf("B's consumer: pending %d delivered %d", info.NumPending, info.Delivered.Consumer)
	}

	// B itself fetches it.
	b := e.unit(t, unitB)
	cons, err := b.js.Consumer(ctx, protocol.StreamDeliver, protocol.DeliverConsumer(unitB))
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data()) != "for B" {
		t.Fatalf("B fetched %q", m.Data())
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUnitStagesLargeObjects(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()

	data := make([]byte, 10<<20)
	rand.Read(data)
	obs, err := a.js.ObjectStore(ctx, protocol.StageBucket)
	if err != nil {
		t.Fatal(err)
	}
	name := "01J0000000000000000000000A.asice"
	info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != uint64(len(data)) {
		t.Fatalf("put %d bytes", info.Size)
	}

	for who, js := range map[string]jetstream.JetStream{"unit": a.js, "hub": e.hubJS} {
		obs, err := js.ObjectStore(ctx, protocol.StageBucket)
		if err != nil {
			t.Fatal(err)
		}
		r, err := obs.Get(ctx, name)
		if err != nil {
			t.Fatalf("%s get: %v", who, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("%s read: %v", who, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s read %d bytes, not what was put", who, len(got))
		}
	}
	// Give the library's consumer clean-up time to report any denial.
	time.Sleep(200 * time.Millisecond)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.errs) != 0 {
		t.Fatalf("async errors: %v", a.errs)
	}
}

func TestUserIssuedAfterStart(t *testing.T) {
	e := newEnv(t)
	// Started, streams in place; now a new unit is registered.
	const unitC = "000.00.00.G12"
	if err := broker.EnsureUnitConsumers(t.Context(), e.hubJS, unitC); err != nil {
		t.Fatal(err)
	}
	c := e.unit(t, unitC)
	if _, err := c.js.Publish(t.Context(), protocol.SubmitSubject(unitC), []byte("x"), jetstream.WithMsgID("doc-c")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.DeliverConsumer(unitC)); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredOrForeignCredsRejected(t *testing.T) {
	e := newEnv(t)
	// Credentials signed by another operator's account.
	other, err := broker.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := other.IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connectUnit(t, e.srv.ClientURL(), creds, unitA); err == nil {
		t.Fatal("foreign credentials accepted")
	}
	// Expired credentials.
	creds, err = e.srv.Keys().IssueUnitCreds(unitA, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	if _, err := connectUnit(t, e.srv.ClientURL(), creds, unitA); err == nil {
		t.Fatal("expired credentials accepted")
	}
}

func TestRestartKeepsKeysAndCreds(t *testing.T) {
	storeDir, keysDir := t.TempDir(), t.TempDir()
	srv := startServer(t, storeDir, keysDir)
	account := srv.Keys().Account()
	_, js := hubConn(t, srv)
	if err := broker.EnsureStreams(t.Context(), js, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureUnitConsumers(t.Context(), js, unitA); err != nil {
		t.Fatal(err)
	}
	unitCreds, err := srv.Keys().IssueUnitCreds(unitA, 0)
	if err != nil {
		t.Fatal(err)
	}
	hubCreds, err := srv.Keys().IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	a, err := connectUnit(t, srv.ClientURL(), unitCreds, unitA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.js.Publish(t.Context(), protocol.SubmitSubject(unitA), []byte("before"), jetstream.WithMsgID("doc-1")); err != nil {
		t.Fatal(err)
	}
	a.nc.Close()
	srv.Shutdown()

	srv = startServer(t, storeDir, keysDir)
	t.Cleanup(srv.Shutdown)
	if got := srv.Keys().Account(); got != account {
		t.Fatalf("account key changed across restart: %s != %s", got, account)
	}
	a, err = connectUnit(t, srv.ClientURL(), unitCreds, unitA)
	if err != nil {
		t.Fatalf("old unit creds after restart: %v", err)
	}
	ack, err := a.js.Publish(t.Context(), protocol.SubmitSubject(unitA), []byte("after"), jetstream.WithMsgID("doc-2"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != 2 {
		t.Fatalf("stream not kept across restart: sequence %d", ack.Sequence)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentialBytes(hubCreds))
	if err != nil {
		t.Fatalf("old hub creds after restart: %v", err)
	}
	nc.Close()
}

func TestHubFullAccess(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Any subject, any stream operation.
	sub, err := e.hub.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Publish("anything.at.all", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	sub.Unsubscribe()
	if _, err := e.hubJS.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.hubJS.DeleteStream(ctx, "SCRATCH"); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{protocol.SubmitSubject(unitA), protocol.DeliverSubject(unitB), protocol.NoticeSubject(unitB), protocol.StatusSubject(unitA)} {
		if _, err := e.hubJS.Publish(ctx, subj, []byte("x")); err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
	}
	if _, err := e.hubJS.CreateOrUpdateConsumer(ctx, protocol.StreamSubmit, jetstream.ConsumerConfig{
		Durable: protocol.HubConsumer, AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hubJS.AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKnownGapsOfTheSharedAccount pins down what subject permissions cannot
// stop while units, the edx streams and the staging object store share the
// EDX account. It passes while the gaps exist; when a change closes one (see
// the package documentation), its subtest fails and must be turned into a
// test of the fix.
//
//  1. The server publishes the reply to a request on the requester's reply
//     subject, which no permission checks, inside the account, where the
//     streams listen. A unit that sets another unit's status subject as the
//     reply subject of its own JetStream publish gets the PubAck stored in
//     EDX_STATUS as that unit's status.
//  2. With the object store's direct get, the reply is content the unit
//     stored itself: any bytes, as another unit's status (or submission,
//     delivery, notice).
//  3. Every staged object is visible to every unit: the stream info that
//     binding the object store needs lists the names, and the meta and chunk
//     access that Get needs then reads them.
//
// Consequence for the hub and the agents until units move to an account of
// their own: the subject names a message's unit for routing, it does not
// authenticate it; a message's author is proven by its signature (the
// container's CMS signature, a hub-signed receipt), and bodies are checked
// against their schema.
func TestKnownGapsOfTheSharedAccount(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()
	victim := protocol.StatusSubject(unitB)
	status, err := e.hubJS.Stream(ctx, protocol.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	lastOnVictim := func() []byte {
		t.Helper()
		time.Sleep(200 * time.Millisecond)
		m, err := status.GetLastMsgForSubject(ctx, victim)
		if err != nil {
			return nil
		}
		return m.Data
	}

	t.Run("reply subject injection", func(t *testing.T) {
		if err := a.nc.PublishRequest(protocol.SubmitSubject(unitA), victim, []byte("own submission")); err != nil {
			t.Fatal(err)
		}
		got := lastOnVictim()
		if !bytes.Contains(got, []byte(`"stream":"EDX_SUBMIT"`)) {
			t.Fatalf("gap closed? last message on %s: %q", victim, got)
		}
		t.Logf("unit A's PubAck stored as %s: %s", victim, got)
	})

	t.Run("staged content injection", func(t *testing.T) {
		forged := []byte(`{"forged":"by unit A"}`)
		meta := "$O." + protocol.StageBucket + ".M.Zm9yZ2Vk"
		if _, err := a.js.Publish(ctx, meta, forged); err != nil {
			t.Fatal(err)
		}
		if err := a.nc.PublishRequest("$JS.API.DIRECT.GET.OBJ_"+protocol.StageBucket+"."+meta, victim, nil); err != nil {
			t.Fatal(err)
		}
		if got := lastOnVictim(); !bytes.Equal(got, forged) {
			t.Fatalf("gap closed? last message on %s: %q", victim, got)
		}
	})

	t.Run("staged objects readable by every unit", func(t *testing.T) {
		hobs, err := e.hubJS.ObjectStore(ctx, protocol.StageBucket)
		if err != nil {
			t.Fatal(err)
		}
		secret := []byte("container staged for unit B")
		name := "for-" + unitB + "-01J00000000000000000000000"
		if _, err := hobs.PutBytes(ctx, name, secret); err != nil {
			t.Fatal(err)
		}
		resp, err := a.nc.Request("$JS.API.STREAM.INFO.OBJ_"+protocol.StageBucket,
			[]byte(`{"subjects_filter":"$O.`+protocol.StageBucket+`.M.>"}`), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		encoded := base64.URLEncoding.EncodeToString([]byte(name))
		if !bytes.Contains(resp.Data, []byte(encoded)) {
			t.Fatalf("gap closed? stream info: %s", resp.Data)
		}
		aobs, err := a.js.ObjectStore(ctx, protocol.StageBucket)
		if err != nil {
			t.Fatal(err)
		}
		got, err := aobs.GetBytes(ctx, name)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("gap closed? unit A read %q, %v", got, err)
		}
	})
}

// TestExternalServer runs a separate nats-server from the configuration the
// keys produce (as an operator would for an external cluster) and drives it
// with the same code: stream setup, hub and unit credentials.
func TestExternalServer(t *testing.T) {
	keys, err := broker.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	cfg := fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q }\n%s", t.TempDir(), keys.ServerConfig())
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("%v\n%s", err, cfg)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("external server not ready")
	}

	hubCreds, err := keys.IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentialBytes(hubCreds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureStreams(t.Context(), js, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureUnitConsumers(t.Context(), js, unitA); err != nil {
		t.Fatal(err)
	}
	unitCreds, err := keys.IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := connectUnit(t, ns.ClientURL(), unitCreds, unitA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.js.Publish(t.Context(), protocol.SubmitSubject(unitA), []byte("x"), jetstream.WithMsgID("doc-1")); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Publish(protocol.SubmitSubject(unitB), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	a.waitPermErr(t, protocol.SubmitSubject(unitB))
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  broker.Config
	}{
		{"no store dir", broker.Config{KeysDir: dir}},
		{"no keys dir", broker.Config{StoreDir: dir}},
		{"bad listen", broker.Config{StoreDir: dir, KeysDir: dir, Listen: "localhost"}},
		{"bad port", broker.Config{StoreDir: dir, KeysDir: dir, Listen: "127.0.0.1:99999"}},
		{"bad monitor", broker.Config{StoreDir: dir, KeysDir: dir, Monitor: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := broker.Start(t.Context(), tc.cfg, testLogger(t)); err == nil {
				t.Fatal("started")
			}
		})
	}
}
