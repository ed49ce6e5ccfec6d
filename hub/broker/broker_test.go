package broker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
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
	hubConn  *broker.HubConn
	hub      *nats.Conn
	hubJS    jetstream.JetStream
	stageJS  jetstream.JetStream // the hub's, in the STAGE account
}

func startServer(t testing.TB, storeDir, keysDir string) *broker.Server {
	t.Helper()
	srv, err := broker.Start(t.Context(), broker.Config{
		Listen:   "127.0.0.1:-1",
		StoreDir: storeDir,
		KeysDir:  keysDir,
		MaxStore: broker.TestMaxStore,
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
	e.hubConn = hubConn(t, e.srv)
	e.hub, e.hubJS, e.stageJS = e.hubConn.NC, e.hubConn.JS, e.hubConn.StageJS
	ctx := t.Context()
	if err := broker.EnsureStreams(ctx, e.hubJS, e.stageJS, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	ss, err := broker.StartStageService(ctx, e.hubConn, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Stop)
	if _, err := broker.EnsureUnitConsumers(ctx, e.hubJS, []string{unitA, unitB}, broker.UnitConsumersMemory); err != nil {
		t.Fatal(err)
	}
	return e
}

func hubConn(t testing.TB, srv *broker.Server) *broker.HubConn {
	t.Helper()
	h, err := srv.ConnectHub(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// unitClient is a unit's connection, recording the asynchronous errors the
// server sends it (permission violations).
type unitClient struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	stage *protocol.Stage

	mu   sync.Mutex
	errs []error
	errc chan error
}

func connectUnit(t testing.TB, url string, creds []byte, unit string) (*unitClient, error) {
	u := &unitClient{errc: make(chan error, 100)}
	nc, js, stage, err := protocol.ConnectUnit(t.Context(), url, creds, document.UnitID(unit),
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
	u.nc, u.js, u.stage = nc, js, stage
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

func (u *unitClient) asyncErrs() []error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.errs)
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
		if err := broker.EnsureStreams(ctx, e.hubJS, e.stageJS, broker.StreamOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := broker.EnsureUnitConsumer(ctx, e.hubJS, unitA, ""); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]jetstream.RetentionPolicy{
		protocol.StreamSubmit:  jetstream.WorkQueuePolicy,
		protocol.StreamDeliver: jetstream.LimitsPolicy,
		protocol.StreamStatus:  jetstream.LimitsPolicy,
	}
	for name, ret := range want {
		s, err := e.hubJS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		maxMsg := int32(broker.DefaultMaxPayload)
		if name == protocol.StreamStatus {
			maxMsg = protocol.MaxStatusSize + 4<<10
		}
		if cfg.Retention != ret || cfg.Storage != jetstream.FileStorage || cfg.MaxMsgSize != maxMsg {
			t.Errorf("%s: retention %v storage %v max msg %d", name, cfg.Retention, cfg.Storage, cfg.MaxMsgSize)
		}
		if cfg.Duplicates != broker.DefaultDuplicates {
			t.Errorf("%s: duplicates %v", name, cfg.Duplicates)
		}
	}
	// The decision events: bounded, kept for the max age, and, full, they
	// drop their oldest (the archive holds what they report; a hub that had
	// not applied them rebuilds its index) rather than hold up a decision.
	ev, err := e.hubJS.Stream(ctx, protocol.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := ev.CachedInfo().Config; cfg.MaxBytes != broker.DefaultEventsMaxBytes || cfg.MaxMsgs != broker.DefaultMaxMsgs ||
		cfg.MaxAge != broker.DefaultMaxAge || cfg.Discard != jetstream.DiscardOld || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.Duplicates != broker.DefaultDuplicates || len(cfg.Subjects) != 1 || cfg.Subjects[0] != protocol.SubjectEventPrefix+">" {
		t.Errorf("%s: %+v", protocol.StreamEvents, cfg)
	}
	// Every stream is bounded and refuses rather than drops; the ones units
	// write are bounded per unit too.
	for name, perUnit := range map[string]int64{
		protocol.StreamSubmit: broker.DefaultSubmitUnitPending, protocol.StreamStatus: broker.DefaultStatusUnitPending,
		protocol.StreamUpload:  (broker.DefaultUploadUnitQuota + protocol.MaxUploadMsgSize - 1) / protocol.MaxUploadMsgSize,
		protocol.StreamDeliver: 0,
	} {
		s, err := e.hubJS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.MaxBytes <= 0 || cfg.MaxMsgs <= 0 || cfg.MaxMsgSize <= 0 || cfg.Discard != jetstream.DiscardNew {
			t.Errorf("%s: max bytes %d, max msgs %d, max msg size %d, discard %v", name, cfg.MaxBytes, cfg.MaxMsgs, cfg.MaxMsgSize, cfg.Discard)
		}
		if perUnit > 0 && (cfg.MaxMsgsPerSubject != perUnit || !cfg.DiscardNewPerSubject) {
			t.Errorf("%s: %d per subject (discard new per subject %v), want %d", name, cfg.MaxMsgsPerSubject, cfg.DiscardNewPerSubject, perUnit)
		}
	}
	// The upload stream: one subject per unit, no rollups, read by sequence.
	up, err := e.hubJS.Stream(ctx, protocol.StreamUpload)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := up.CachedInfo().Config; cfg.AllowRollup || !cfg.AllowDirect || cfg.MaxMsgSize != protocol.MaxUploadMsgSize ||
		cfg.MaxAge != broker.DefaultStageTTL || cfg.Subjects[0] != protocol.SubjectUploadPrefix+">" {
		t.Errorf("upload stream config %+v", cfg)
	}
	// The stage store is in STAGE, not in EDX.
	obs, err := e.stageJS.ObjectStore(ctx, protocol.StageBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := obs.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 0 || st.Size() > broker.DefaultStageMaxBytes {
		t.Errorf("stage ttl %v, want none: staged deliveries live while a delivery names them", st.TTL())
	}
	if si, err := e.stageJS.Stream(ctx, protocol.StageStream); err != nil || si.CachedInfo().Config.MaxBytes != broker.DefaultStageMaxBytes {
		t.Errorf("stage store not bounded: %v", err)
	}
	if _, err := e.hubJS.ObjectStore(ctx, protocol.StageBucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("stage store in EDX: %v", err)
	}
	// What units receive, deliveries and notices, is in one stream, each
	// unit reading its own with one consumer (its state in memory, one
	// replica: a cursor; the messages stay until the hub removes them).
	dl, err := e.hubJS.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := dl.CachedInfo().Config; !slices.Equal(cfg.Subjects, []string{protocol.SubjectDeliverPrefix + ">"}) ||
		cfg.MaxBytes != broker.DefaultDeliverMaxBytes+broker.DefaultNoticeMaxBytes || cfg.MaxMsgs != 2*broker.DefaultMaxMsgs {
		t.Errorf("%s: %+v", protocol.StreamDeliver, cfg)
	}
	if _, err := e.hubJS.Stream(ctx, protocol.LegacyStreamNotice); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("%s: %v", protocol.LegacyStreamNotice, err)
	}
	c, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	if cc := c.CachedInfo().Config; cc.FilterSubject != protocol.DeliverSubject(unitA) || len(cc.FilterSubjects) != 0 || !cc.MemoryStorage || cc.Replicas != 1 ||
		cc.Metadata[protocol.UnitConsumerMetadata] != "true" ||
		cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxDeliver != -1 || cc.AckWait != broker.UnitAckWait {
		t.Errorf("unit consumer config %+v", cc)
	}
	if l := dl.ListConsumers(ctx); l != nil {
		n := 0
		for range l.Info() {
			n++
		}
		if n != 2 {
			t.Errorf("%d consumers on %s, want one per unit", n, protocol.StreamDeliver)
		}
	}
	// Asked again, nothing changes.
	if n, err := broker.EnsureUnitConsumers(ctx, e.hubJS, []string{unitA, unitB}, ""); err != nil || n != 0 {
		t.Errorf("consumers made again: %d, %v", n, err)
	}
	// A consumer gone (a server that forgot it) is made again from a
	// listing of names only.
	if err := e.hubJS.DeleteConsumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitB)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{1, 0} {
		if n, err := broker.CreateMissingUnitConsumers(ctx, e.hubJS, []string{unitA, unitB}, ""); err != nil || n != want {
			t.Errorf("missing consumers made: %d, want %d (%v)", n, want, err)
		}
	}
	// Asked for file storage, the consumer is replaced.
	if err := broker.EnsureUnitConsumer(ctx, e.hubJS, unitA, broker.UnitConsumersFile); err != nil {
		t.Fatal(err)
	}
	if c, err = e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA)); err != nil || c.CachedInfo().Config.MemoryStorage {
		t.Errorf("file storage: %v", err)
	}

	// Changing an option updates the streams in place. Deliveries and
	// notices share the stream: it keeps both as long as the longer of
	// the two ages says (zero: until acknowledged).
	if err := broker.EnsureStreams(ctx, e.hubJS, e.stageJS, broker.StreamOptions{DeliverMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if s, err := e.hubJS.Stream(ctx, protocol.StreamDeliver); err != nil || s.CachedInfo().Config.MaxAge != 0 {
		t.Fatalf("deliver_max_age alone: %v", err)
	}
	if err := broker.EnsureStreams(ctx, e.hubJS, e.stageJS, broker.StreamOptions{DeliverMaxAge: time.Hour, NoticeMaxAge: time.Minute}); err != nil {
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
	err := broker.EnsureStreams(t.Context(), e.hubJS, e.stageJS, broker.StreamOptions{MaxMsgSize: 2 * broker.DefaultMaxPayload})
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
		protocol.SubjectSubmitPrefix + "000.00.00", // a prefix of its own unit id
		"edx.deliver.x." + unitA,                   // two tokens before its id
		"$JS.API.STREAM.CREATE.X",
		"$JS.API.STREAM.PURGE." + protocol.StreamSubmit,
		"$JS.API.CONSUMER.CREATE." + protocol.StreamDeliver,
		"$JS.API.CONSUMER.DURABLE.CREATE." + protocol.StreamDeliver + ".x",
		"$JS.API.CONSUMER.DELETE." + protocol.StreamDeliver + "." + protocol.UnitConsumer(unitA),
		"$JS.API.STREAM.PURGE.OBJ_" + protocol.StageBucket,
		// The same under the prefixes the UNITS account imports with.
		protocol.EDXAPIPrefix + ".STREAM.PURGE." + protocol.StreamSubmit,
		protocol.EDXAPIPrefix + ".STREAM.INFO." + protocol.StreamSubmit,
		protocol.EDXAPIPrefix + ".CONSUMER.INFO." + protocol.StreamSubmit + "." + protocol.HubConsumer,
		protocol.EDXAPIPrefix + ".CONSUMER.MSG.NEXT." + protocol.StreamStatus + "." + protocol.HubStatusConsumer,
		protocol.StageAPIPrefix + ".STREAM.PURGE.OBJ_" + protocol.StageBucket,
		protocol.StageAPIPrefix + ".STREAM.DELETE.OBJ_" + protocol.StageBucket,
		// The stage store is read only, the upload store write only.
		"$O." + protocol.StageBucket + ".M.eA",
		"$O." + protocol.StageBucket + ".C.x",
		protocol.UploadSubject(unitB),
		protocol.EDXAPIPrefix + ".STREAM.INFO." + protocol.StreamUpload,
		protocol.EDXAPIPrefix + ".DIRECT.GET." + protocol.StreamUpload,
		protocol.EDXAPIPrefix + ".DIRECT.GET." + protocol.StreamUpload + "." + protocol.UploadSubject(unitA),
		protocol.EDXAPIPrefix + ".CONSUMER.CREATE." + protocol.StreamUpload + ".x." + protocol.UploadSubject(unitA),
		// The hubs' decision events: neither forged nor read.
		protocol.SubjectEventPrefix + "accepted",
		protocol.SubjectEventPrefix + "unit",
		protocol.EDXAPIPrefix + ".STREAM.INFO." + protocol.StreamEvents,
		protocol.EDXAPIPrefix + ".DIRECT.GET." + protocol.StreamEvents,
		protocol.EDXAPIPrefix + ".CONSUMER.CREATE." + protocol.StreamEvents + ".x",
		protocol.EDXAPIPrefix + ".CONSUMER.MSG.NEXT." + protocol.StreamEvents + ".edx-index-x",
		// The stage store: only through the hub's service, and the unit's
		// own consumers.
		protocol.StageSubject(unitB),
		protocol.StageAPIPrefix + ".STREAM.INFO." + protocol.StageStream,
		protocol.StageAPIPrefix + ".DIRECT.GET." + protocol.StageStream + ".$O." + protocol.StageBucket + ".M.*",
		protocol.StageAPIPrefix + ".CONSUMER.CREATE." + protocol.StageStream + ".x.$O." + protocol.StageBucket + ".C.*",
		protocol.StageAPIPrefix + ".CONSUMER.CREATE." + protocol.StageStream + "." + protocol.StageConsumer(unitA, 0) + ".$O." + protocol.StageBucket + ".C.*",
		protocol.StageAPIPrefix + ".CONSUMER.DURABLE.CREATE." + protocol.StageStream + ".x",
		protocol.StageAPIPrefix + ".CONSUMER.DELETE." + protocol.StageStream + "." + protocol.StageConsumer(unitB, 0),
		protocol.StageAPIPrefix + ".CONSUMER.MSG.NEXT." + protocol.StageStream + "." + protocol.StageConsumer(unitB, 0),
		protocol.StageAPIPrefix + ".CONSUMER.DELETE." + protocol.StageStream + "." + protocol.StageConsumer(unitA, protocol.StageSlots),
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

	// The permission edx.*.UNIT admits these, and no import carries them
	// (UnitPermissions): only the hub delivers and sends notices, and a
	// literal "*" where an import has a verb names no service. None reaches
	// a stream, a subscriber in EDX, or the unit's stage consumer.
	hubSaw, err := e.hub.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Flush(); err != nil {
		t.Fatal(err)
	}
	stageCons := protocol.StageConsumer(unitA, 0)
	if _, err := e.stageJS.CreateOrUpdateConsumer(t.Context(), protocol.StageStream, jetstream.ConsumerConfig{Durable: stageCons}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{
		protocol.DeliverSubject(unitA),
		protocol.LegacySubjectNoticePrefix + unitA,
		protocol.StageAPIPrefix + ".CONSUMER.*." + protocol.StageStream + "." + stageCons,
	} {
		if err := a.nc.Publish(subj, []byte("forged")); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := hubSaw.NextMsg(500 * time.Millisecond); err == nil {
		t.Errorf("the hub's account saw %s", m.Subject)
	}
	for _, stream := range []string{protocol.StreamDeliver, protocol.LegacyStreamNotice} {
		st, err := e.hubJS.Stream(t.Context(), stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, subj := range []string{protocol.DeliverSubject(unitA), protocol.LegacySubjectNoticePrefix + unitA} {
			if _, err := st.GetLastMsgForSubject(t.Context(), subj); !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Errorf("%s in %s: %v", subj, stream, err)
			}
		}
	}
	if _, err := e.stageJS.Consumer(t.Context(), protocol.StageStream, stageCons); err != nil {
		t.Errorf("the unit's stage consumer after a literal \"*\" verb: %v", err)
	}

	// Core subscriptions outside its inbox are denied too.
	for _, subj := range []string{protocol.DeliverSubject(unitB), "edx.>", ">", protocol.InboxPrefix(unitB) + ".>", "_INBOX.>", protocol.InboxRoot + ".>"} {
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

	if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("delivery"), jetstream.WithMsgID("doc-1/"+unitA)); err != nil {
		t.Fatal(err)
	}
	n, err := protocol.NoticeMsg(unitA, &protocol.Notice{Type: protocol.NoticeAccepted}, "doc-2/accepted")
	if err != nil {
		t.Fatal(err)
	}
	n.Data = []byte("notice")
	if _, err := e.hubJS.PublishMsg(ctx, n); err != nil {
		t.Fatal(err)
	}
	// One consumer brings both, in the order they were sent.
	cons, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, fmt.Sprintf("%s %v", m.Data(), protocol.IsNotice(m.Headers())))
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if batch.Error() != nil {
		t.Fatal(batch.Error())
	}
	if !slices.Equal(got, []string{"delivery false", "notice true"}) {
		t.Fatalf("fetched %q", got)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Consumer != 2 {
		t.Fatalf("after ack: pending %d ack pending %d ack floor %d", info.NumPending, info.NumAckPending, info.AckFloor.Consumer)
	}
	if errs := a.asyncErrs(); len(errs) != 0 {
		t.Fatalf("async errors: %v", errs)
	}
}

func TestUnitCannotConsumeOthers(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()
	if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitB), []byte("for B"), jetstream.WithMsgID("doc-1/"+unitB)); err != nil {
		t.Fatal(err)
	}
	nb, err := protocol.NoticeMsg(unitB, &protocol.Notice{Type: protocol.NoticeAccepted}, "doc-2/accepted")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hubJS.PublishMsg(ctx, nb); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ stream, consumer string }{
		{protocol.StreamDeliver, protocol.UnitConsumer(unitB)},
	} {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := a.js.Consumer(cctx, c.stream, c.consumer)
		cancel()
		if err == nil {
			t.Fatalf("unit A looked up %s", c.consumer)
		}
		a.waitPermErr(t, protocol.EDXAPIPrefix+".CONSUMER.INFO."+c.stream+"."+c.consumer)

		// A raw pull request, skipping the consumer lookup, is denied too.
		next := protocol.EDXAPIPrefix + ".CONSUMER.MSG.NEXT." + c.stream + "." + c.consumer
		_, err = a.nc.Request(next, []byte(`{"batch":1,"expires":1000000000}`), 500*time.Millisecond)
		if err == nil {
			t.Fatalf("pull from %s answered", c.consumer)
		}
		a.waitPermErr(t, next)
	}

	// A's own consumer reads nothing of B's.
	own, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := own.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err == nil {
		t.Fatalf("unit A's consumer brought %s", m.Subject())
	}

	// B's delivery and notice are still there, undelivered.
	c, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitB))
	if err != nil {
		t.Fatal(err)
	}
	if info := c.CachedInfo(); info.NumPending != 2 || info.Delivered.Consumer != 0 {
		t.Fatalf("B's consumer: pending %d delivered %d", info.NumPending, info.Delivered.Consumer)
	}

	// B itself fetches them.
	b := e.unit(t, unitB)
	cons, err := b.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitB))
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

// TestLargeObjects: a unit uploads a large submission that the hub reads, and
// reads a large delivery that the hub staged, with no permission violation;
// what the stores hold is ciphertext.
func TestLargeObjects(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()

	data := make([]byte, 10<<20)
	rand.Read(data)
	c := &protocol.Container{Data: data, Size: int64(len(data))}
	if err := protocol.UploadStaged(ctx, a.js, unitA, c); err != nil {
		t.Fatal(err)
	}
	uploads, err := e.hubJS.Stream(ctx, protocol.StreamUpload)
	if err != nil {
		t.Fatal(err)
	}
	got, seqs, err := protocol.GetUpload(ctx, uploads, unitA, c, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("hub read the upload: %v, identical=%v", err, bytes.Equal(got, data))
	}
	first, err := uploads.GetMsg(ctx, c.StagedSeq)
	if err != nil || first.Subject != protocol.UploadSubject(unitA) || bytes.Contains(first.Data, data[:64]) {
		t.Fatalf("upload stored in the clear, or elsewhere (%v)", err)
	}
	if _, _, err := protocol.GetUpload(ctx, uploads, unitA, c, int64(len(data))-1); !errors.Is(err, protocol.ErrStageInvalid) {
		t.Fatalf("oversized upload: %v", err)
	}
	if _, _, err := protocol.GetUpload(ctx, uploads, unitB, c, int64(len(data))); !errors.Is(err, protocol.ErrStageInvalid) {
		t.Fatalf("A's upload read as B's: %v", err)
	}
	// Released, its chunks are gone, and the unit's quota with them.
	if err := protocol.ReleaseUpload(ctx, uploads, seqs); err != nil {
		t.Fatal(err)
	}
	info, err := uploads.Info(ctx, jetstream.WithSubjectFilter(protocol.UploadSubject(unitA)))
	if err != nil || info.State.Subjects[protocol.UploadSubject(unitA)] != 0 {
		t.Fatalf("after release: %v %v", err, info.State.Subjects)
	}
	if err := protocol.ReleaseUpload(ctx, uploads, seqs); err != nil {
		t.Fatalf("released twice: %v", err)
	}

	stage, err := e.hubConn.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dname, dkey, err := protocol.PutStaged(ctx, stage, data)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 * protocol.StageSlots { // slots are reused
		got, err = protocol.GetStaged(ctx, a.stage, dname, dkey, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("unit read the delivery: %v, identical=%v", err, bytes.Equal(got, data))
		}
	}
	if _, err := protocol.GetStaged(ctx, a.stage, protocol.DeliverStageName(), dkey, int64(len(data))); !errors.Is(err, protocol.ErrStageInvalid) {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := protocol.GetStaged(ctx, a.stage, dname, dkey, int64(len(data))-1); !errors.Is(err, protocol.ErrStageInvalid) {
		t.Fatalf("oversized object: %v", err)
	}
	// The unit deleted its consumers once done.
	for slot := range protocol.StageSlots {
		if _, err := e.stageJS.Consumer(ctx, protocol.StageStream, protocol.StageConsumer(unitA, slot)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("slot %d consumer left behind: %v", slot, err)
		}
	}
	if errs := a.asyncErrs(); len(errs) != 0 {
		t.Fatalf("async errors: %v", errs)
	}
}

func TestUserIssuedAfterStart(t *testing.T) {
	e := newEnv(t)
	// Started, streams in place; now a new unit is registered.
	const unitC = "000.00.00.G12"
	if err := broker.EnsureUnitConsumer(t.Context(), e.hubJS, unitC, ""); err != nil {
		t.Fatal(err)
	}
	c := e.unit(t, unitC)
	if _, err := c.js.Publish(t.Context(), protocol.SubmitSubject(unitC), []byte("x"), jetstream.WithMsgID("doc-c")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(unitC)); err != nil {
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
	account, units, stage := srv.Keys().Account(), srv.Keys().UnitsAccount(), srv.Keys().StageAccount()
	h := hubConn(t, srv)
	js := h.JS
	if err := broker.EnsureStreams(t.Context(), js, h.StageJS, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureUnitConsumer(t.Context(), js, unitA, ""); err != nil {
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
	if k := srv.Keys(); k.Account() != account || k.UnitsAccount() != units || k.StageAccount() != stage {
		t.Fatal("account keys changed across restart")
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
	for _, subj := range []string{protocol.SubmitSubject(unitA), protocol.DeliverSubject(unitB), protocol.StatusSubject(unitA)} {
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
	// In STAGE, the hub writes, reads and deletes staged objects.
	stage, err := e.hubConn.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stage.PutBytes(ctx, "x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, err := stage.GetBytes(ctx, "x"); err != nil || string(got) != "x" {
		t.Fatalf("stage get: %q %v", got, err)
	}
	if err := stage.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
}

// TestNoForgeryAcrossAccounts holds the lines the account layout draws (see
// the package documentation). NATS checks what a client publishes but not the
// reply subject it names, and the server publishes replies and push-consumer
// deliveries wherever the requester says. While units shared the EDX account
// with the streams, unit A could so have the server store a PubAck, or bytes
// it chose (staged, then read back with a direct get), as unit B's status;
// read every staged object; and wipe the stage store with one rolled-up
// publish. Each subtest tries one of those and checks that nothing reaches B's
// subjects or B's data.
func TestNoForgeryAcrossAccounts(t *testing.T) {
	e := newEnv(t)
	a, b := e.unit(t, unitA), e.unit(t, unitB)
	ctx := t.Context()
	victims := []string{protocol.StatusSubject(unitB), protocol.SubmitSubject(unitB), protocol.DeliverSubject(unitB)}
	streamOf := map[string]string{
		protocol.StatusSubject(unitB): protocol.StreamStatus, protocol.SubmitSubject(unitB): protocol.StreamSubmit,
		protocol.DeliverSubject(unitB): protocol.StreamDeliver,
	}
	nothingOnVictims := func(t *testing.T) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		for _, v := range victims {
			s, err := e.hubJS.Stream(ctx, streamOf[v])
			if err != nil {
				t.Fatal(err)
			}
			if m, err := s.GetLastMsgForSubject(ctx, v); !errors.Is(err, jetstream.ErrMsgNotFound) {
				var data []byte
				if m != nil {
					data = m.Data
				}
				t.Fatalf("%s holds %q (%v)", v, data, err)
			}
		}
	}
	stage, err := e.hubConn.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte("container staged for unit B "), 1000)
	name, key, err := protocol.PutStaged(ctx, stage, secret)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stage.GetInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	stageChunks := "$O." + protocol.StageBucket + ".C." + info.NUID
	uploads, err := e.hubJS.Stream(ctx, protocol.StreamUpload)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reply subject injection", func(t *testing.T) {
		// A delivery waiting for A, so that a pull request has something to answer.
		if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("delivery")); err != nil {
			t.Fatal(err)
		}
		chunk := nats.NewMsg(protocol.UploadSubject(unitA))
		chunk.Header.Set(protocol.HeaderUpload, protocol.SubmitStageName())
		chunk.Header.Set(protocol.HeaderChunk, "0")
		chunk.Data = []byte("own upload")
		stageReq, _ := json.Marshal(protocol.StageRequest{Name: name, Slot: 0})
		for _, v := range victims {
			for _, req := range []struct {
				subject string
				header  nats.Header
				body    []byte
			}{
				{protocol.SubmitSubject(unitA), nil, []byte("own submission")},
				{protocol.StatusSubject(unitA), nil, []byte("own status")},
				{chunk.Subject, chunk.Header, chunk.Data},
				{protocol.EDXAPIPrefix + ".CONSUMER.INFO." + protocol.StreamDeliver + "." + protocol.UnitConsumer(unitA), nil, nil},
				{protocol.EDXAPIPrefix + ".CONSUMER.MSG.NEXT." + protocol.StreamDeliver + "." + protocol.UnitConsumer(unitA), nil, []byte(`{"batch":1}`)},
				{protocol.StageSubject(unitA), nil, stageReq},
				{protocol.StageAPIPrefix + ".CONSUMER.INFO." + protocol.StageStream + "." + protocol.StageConsumer(unitA, 0), nil, nil},
				{protocol.StageAPIPrefix + ".CONSUMER.MSG.NEXT." + protocol.StageStream + "." + protocol.StageConsumer(unitA, 0), nil, []byte(`{"batch":1}`)},
			} {
				if err := a.nc.PublishMsg(&nats.Msg{Subject: req.subject, Reply: v, Header: req.header, Data: req.body}); err != nil {
					t.Fatal(err)
				}
			}
		}
		nothingOnVictims(t)
		if errs := a.asyncErrs(); len(errs) != 0 {
			t.Fatalf("own subjects denied: %v", errs)
		}
	})

	t.Run("no consumer of its own on the stage store", func(t *testing.T) {
		// Push consumers (whose deliver subject comes from the request body)
		// and durable ones: a unit creates neither, under any name, with
		// any filter; it pulls only from the consumers the hub's stage
		// service made for it.
		for i, deliver := range append(slices.Clone(victims), "") {
			for _, cons := range []string{fmt.Sprintf("forged%d", i), protocol.StageConsumer(unitA, 0)} {
				body := fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"durable_name":%q,"deliver_subject":%q,"filter_subject":%q,"ack_policy":"none","deliver_policy":"all"}}`,
					protocol.StageStream, cons, cons, deliver, stageChunks)
				subj := protocol.StageAPIPrefix + ".CONSUMER.CREATE." + protocol.StageStream + "." + cons + "." + stageChunks
				if _, err := a.nc.Request(subj, []byte(body), 300*time.Millisecond); err == nil {
					t.Fatalf("consumer %s created", cons)
				}
				a.waitPermErr(t, subj)
			}
		}
		nothingOnVictims(t)
		// (The stage service made A's slot 0 for the request above.)
		if names := consumerNames(t, e.stageJS, protocol.StageStream); len(names) > 1 || len(names) == 1 && names[0] != protocol.StageConsumer(unitA, 0) {
			t.Fatalf("consumers on the stage store: %v", names)
		}
		if got, err := protocol.GetStaged(ctx, b.stage, name, key, int64(len(secret))); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("B's staged delivery after the attempts: %v", err)
		}
	})

	t.Run("staged objects readable only by name and key", func(t *testing.T) {
		// A can neither list the stage store nor read a staged object's
		// meta, even with a literal "*" where a name goes.
		for _, subj := range []string{
			protocol.StageAPIPrefix + ".STREAM.INFO." + protocol.StageStream,
			protocol.StageAPIPrefix + ".DIRECT.GET." + protocol.StageStream + ".$O." + protocol.StageBucket + ".M.*",
			protocol.StageAPIPrefix + ".DIRECT.GET." + protocol.StageStream + ".$O." + protocol.StageBucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)),
			protocol.StageAPIPrefix + ".DIRECT.GET." + protocol.StageStream,
		} {
			if _, err := a.nc.Request(subj, []byte(`{"subjects_filter":">","next_by_subj":">","seq":1}`), 300*time.Millisecond); err == nil {
				t.Fatalf("%s answered", subj)
			}
			a.waitPermErr(t, subj)
		}
		// With the name of B's object but not its key, A gets nothing.
		wrong := bytes.Clone(key)
		wrong[0] ^= 1
		if _, err := protocol.GetStaged(ctx, a.stage, name, wrong, int64(len(secret))); !errors.Is(err, protocol.ErrStageInvalid) {
			t.Fatalf("decrypted with another key: %v", err)
		}

		// Uploads: A can neither list nor read B's.
		c := &protocol.Container{Data: secret, Size: int64(len(secret))}
		if err := protocol.UploadStaged(ctx, b.js, unitB, c); err != nil {
			t.Fatal(err)
		}
		if _, err := a.js.Stream(ctx, protocol.StreamUpload); err == nil {
			t.Fatal("A looked the upload stream up")
		}
		a.waitPermErr(t, protocol.EDXAPIPrefix+".STREAM.INFO."+protocol.StreamUpload)
		if got, _, err := protocol.GetUpload(ctx, uploads, unitB, c, int64(len(secret))); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("hub read B's upload: %v", err)
		}
	})

	t.Run("staged objects cannot be overwritten or wiped", func(t *testing.T) {
		// The stage store is read only for units.
		if err := a.nc.Publish("$O."+protocol.StageBucket+".M."+base64.URLEncoding.EncodeToString([]byte(name)), []byte(`{"deleted":true}`)); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, "$O."+protocol.StageBucket+".M.")
		if err := a.nc.Publish(stageChunks, []byte("more")); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, stageChunks)
		// The upload stream takes no rollup: a unit's "Nats-Rollup: all"
		// would purge every other unit's uploads.
		c := &protocol.Container{Data: secret, Size: int64(len(secret))}
		if err := protocol.UploadStaged(ctx, b.js, unitB, c); err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(protocol.UploadSubject(unitA))
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
		if _, err := a.js.PublishMsg(ctx, m); err == nil {
			t.Fatal("rollup accepted on the upload stream")
		}
		if _, _, err := protocol.GetUpload(ctx, uploads, unitB, c, int64(len(secret))); err != nil {
			t.Fatalf("B's upload after the rollup attempt: %v", err)
		}
		if got, err := protocol.GetStaged(ctx, b.stage, name, key, int64(len(secret))); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("B's staged delivery: %v", err)
		}
	})
}

// consumerNames lists the consumers of a stream.
func consumerNames(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	l := s.ConsumerNames(t.Context())
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestExternalServer runs a separate nats-server from the configuration the
// keys produce (as an operator would for an external cluster) and drives it
// with the same code: stream setup, hub and unit credentials, deliveries and
// acks across the accounts, large objects both ways. It runs with the ack and
// flow-control subject layout of today and with the one that servers will
// switch to (v2: domain and account hash in the subject), which the exports
// and permissions cover too.
func TestExternalServer(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v2 acks %v", v2), func(t *testing.T) { testExternalServer(t, v2) })
	}
}

func testExternalServer(t *testing.T, v2 bool) {
	keys, err := broker.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	cfg := fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q, max_file_store: 64GB }\nfeature_flags { js_ack_fc_v2: %v }\n%s",
		t.TempDir(), v2, keys.ServerConfig())
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
	stageCreds, err := keys.IssueHubStageCreds()
	if err != nil {
		t.Fatal(err)
	}
	h, err := broker.ConnectHub(t.Context(), ns.ClientURL(), hubCreds, stageCreds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	js := h.JS
	if err := broker.EnsureStreams(t.Context(), js, h.StageJS, broker.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	ss, err := broker.StartStageService(t.Context(), h, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Stop)
	if err := broker.EnsureUnitConsumer(t.Context(), js, unitA, ""); err != nil {
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
	// A delivery, fetched and acknowledged.
	if _, err := js.Publish(t.Context(), protocol.DeliverSubject(unitA), []byte("delivery")); err != nil {
		t.Fatal(err)
	}
	cons, err := a.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(m.Reply(), "$JS.ACK."+protocol.StreamDeliver+".") == v2 {
		t.Fatalf("ack subject %s", m.Reply())
	}
	if err := m.DoubleAck(t.Context()); err != nil {
		t.Fatalf("ack %s: %v", m.Reply(), err)
	}
	// Large objects both ways.
	data := bytes.Repeat([]byte("x"), 5<<20)
	if err := protocol.UploadStaged(t.Context(), a.js, unitA, &protocol.Container{Data: data}); err != nil {
		t.Fatal(err)
	}
	stage, err := h.Stage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	name, key, err := protocol.PutStaged(t.Context(), stage, data)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := protocol.GetStaged(t.Context(), a.stage, name, key, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("unit read a staged delivery: %v", err)
	}
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
		{"ping too often", broker.Config{StoreDir: dir, KeysDir: dir, PingInterval: 500 * time.Millisecond}},
		{"ping too seldom", broker.Config{StoreDir: dir, KeysDir: dir, PingInterval: 11 * time.Minute}},
		{"negative ping", broker.Config{StoreDir: dir, KeysDir: dir, PingInterval: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := broker.Start(t.Context(), tc.cfg, testLogger(t)); err == nil {
				t.Fatal("started")
			}
		})
	}
}

// TestManyUnits: more units than nats-server's default cap of 1,000
// consumers per stream each get their consumer.
func TestManyUnits(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 1100; i++ {
		unit := fmt.Sprintf("%03d.%02d.00.H29", i%1000, i/1000)
		if err := broker.EnsureUnitConsumer(t.Context(), e.hubJS, unit, ""); err != nil {
			t.Fatalf("unit %d: %v", i, err)
		}
	}
}

// TestRestartInProcess: Restart brings the embedded server back on the same
// address and store; connected clients reconnect by themselves and find
// what was stored, and Health reports it healthy.
func TestRestartInProcess(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()
	if err := e.srv.Health(); err != nil {
		t.Fatalf("health: %v", err)
	}
	url := e.srv.ClientURL()
	if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("before"), jetstream.WithMsgID("before")); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if e.srv.ClientURL() != url {
		t.Fatalf("restarted on %s, was %s", e.srv.ClientURL(), url)
	}
	if err := e.srv.Health(); err != nil {
		t.Fatalf("health after restart: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("after"), jetstream.WithMsgID("after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub's connection did not come back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The server forgot the units' consumers (kept in memory), not their
	// messages: the hub gives them back, as it does when it starts or
	// reconnects.
	if _, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer after the restart: %v", err)
	}
	if n, err := broker.EnsureUnitConsumers(ctx, e.hubJS, []string{unitA, unitB}, ""); err != nil || n != 2 {
		t.Fatalf("consumers given back: %d, %v", n, err)
	}
	cons, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data()))
		m.Ack()
	}
	if strings.Join(got, ",") != "before,after" {
		t.Fatalf("the unit fetched %q after the restart", got)
	}
}

// TestLogShapedUnitWitnessesAsItself: a unit whose id starts with a token
// of a log token's shape has its services listed (UnitPermissions), so it
// cannot send a witness request as the rest of its id; it still submits.
func TestLogShapedUnitWitnessesAsItself(t *testing.T) {
	e := newEnv(t)
	const unit = "0123456789abcdef.00.H29" // not edXML's: a bare NATS client
	creds, err := e.srv.Keys().IssueUnitCreds(unit, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.ParseDecoratedNKey(creds)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	u := &unitClient{errc: make(chan error, 100)}
	u.nc, err = nats.Connect(e.srv.ClientURL(), nats.UserJWTAndSeed(tok, string(seed)),
		nats.CustomInboxPrefix(protocol.InboxPrefix(unit)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { u.errc <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer u.nc.Close()
	as := protocol.SubjectWitnessPrefix + unit // log 0123456789abcdef, unit 00.H29
	if err := u.nc.Publish(as, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	u.waitPermErr(t, as)
	if m, err := u.nc.Request(protocol.SubmitSubject(unit), []byte("submission"), 5*time.Second); err != nil || !strings.Contains(string(m.Data), protocol.StreamSubmit) {
		t.Fatalf("submit: %v", err)
	}
}
