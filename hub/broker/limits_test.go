package broker_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// newEnvWith is newEnv with stream options and key options (unit limits).
func newEnvWith(t testing.TB, streams broker.StreamOptions, keysOpts ...broker.KeysOption) *env {
	t.Helper()
	e := &env{storeDir: t.TempDir(), keysDir: t.TempDir()}
	srv, err := broker.Start(t.Context(), broker.Config{Listen: "127.0.0.1:-1", StoreDir: e.storeDir, KeysDir: e.keysDir, MaxStore: broker.TestMaxStore}, testLogger(t), keysOpts...)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	t.Cleanup(e.srv.Shutdown)
	e.hubConn = hubConn(t, e.srv)
	e.hub, e.hubJS, e.stageJS = e.hubConn.NC, e.hubConn.JS, e.hubConn.StageJS
	if err := broker.EnsureStreams(t.Context(), e.hubJS, e.stageJS, streams); err != nil {
		t.Fatal(err)
	}
	ss, err := broker.StartStageService(t.Context(), e.hubConn, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Stop)
	for _, u := range []string{unitA, unitB} {
		if err := broker.EnsureUnitConsumer(t.Context(), e.hubJS, u, ""); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// unitConnz is the server's view of a unit's connections.
func unitConnz(t *testing.T, e *env) []*server.ConnInfo {
	t.Helper()
	cz, err := e.srv.NATS().Connz(&server.ConnzOptions{Account: e.srv.Keys().UnitsAccount(), Subscriptions: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return cz.Conns
}

// TestUnitSubscriptionLimit: the server refuses a unit's subscriptions
// beyond the limit (the 250,000-subscription attack), so the server, which
// shares the hub's process, holds no more of them.
func TestUnitSubscriptionLimit(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	limit := broker.DefaultUnitLimits.MaxSubscriptions
	before := e.srv.NATS().NumSubscriptions()
	for i := range 3 * limit {
		if _, err := a.nc.SubscribeSync(fmt.Sprintf("%s.flood.%d", protocol.InboxPrefix(unitA), i)); err != nil {
			break // the client may notice the connection closing
		}
	}
	a.nc.Flush()
	deadline := time.After(5 * time.Second)
	for !hasErr(a.asyncErrs(), "maximum subscriptions exceeded") {
		select {
		case <-deadline:
			t.Fatalf("no subscription limit error; async errors %v", a.asyncErrs())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, c := range unitConnz(t, e) {
		if int64(c.NumSubs) > limit {
			t.Errorf("connection %d holds %d subscriptions, limit %d", c.Cid, c.NumSubs, limit)
		}
	}
	// Each subscription on the unit's inbox has a shadow in EDX, which
	// exports the units' inboxes (the decisions edx send waits for): the
	// server holds at most twice the limit.
	if after := e.srv.NATS().NumSubscriptions(); int64(after-before) > 2*limit {
		t.Errorf("server subscriptions %d → %d, limit %d (and a shadow of each in EDX)", before, after, limit)
	}
	// The same credentials carry the limits themselves.
	creds, err := e.srv.Keys().IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Limits.Subs != limit || uc.Limits.Payload != broker.DefaultUnitLimits.MaxPayload {
		t.Errorf("user limits %+v", uc.Limits.NatsLimits)
	}
}

func hasErr(errs []error, s string) bool {
	for _, err := range errs {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// TestUnitPayloadLimit: the server refuses a message above the unit's
// payload limit, sent past the client library's own check.
func TestUnitPayloadLimit(t *testing.T) {
	e := newEnv(t)
	creds, err := e.srv.Keys().IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	limit := broker.DefaultUnitLimits.MaxPayload
	if got := rawPublish(t, e.srv.ClientURL(), creds, protocol.SubmitSubject(unitA), int(limit)); got != "PONG" {
		t.Fatalf("publish at the limit: %q", got)
	}
	if got := rawPublish(t, e.srv.ClientURL(), creds, protocol.SubmitSubject(unitA), int(limit)+1); !strings.Contains(got, "Maximum Payload Violation") {
		t.Fatalf("publish above the limit: %q", got)
	}
}

// rawPublish connects with creds over the NATS protocol itself, publishes
// size bytes on subject and returns the server's answer to the PING after
// it: PONG, or an -ERR.
func rawPublish(t *testing.T, natsURL string, creds []byte, subject string, size int) string {
	t.Helper()
	u, err := url.Parse(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("INFO: %q %v", line, err)
	}
	var info struct {
		Nonce string `json:"nonce"`
	}
	json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info)
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := kp.Sign([]byte(info.Nonce))
	if err != nil {
		t.Fatal(err)
	}
	connect, _ := json.Marshal(map[string]any{"verbose": false, "pedantic": false, "jwt": tok,
		"sig": base64.RawURLEncoding.EncodeToString(sig), "protocol": 1, "headers": true})
	fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect)
	if line, err := r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "PONG" {
		t.Fatalf("connect: %q %v", line, err)
	}
	fmt.Fprintf(conn, "PUB %s %d\r\n", subject, size)
	conn.Write(bytes.Repeat([]byte("x"), size))
	fmt.Fprintf(conn, "\r\nPING\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "closed: " + err.Error()
		}
		if line = strings.TrimSpace(line); line != "PING" && !strings.HasPrefix(line, "INFO ") {
			return line
		}
	}
}

// TestUnitConnectionLimits: the server caps the units' connections
// together; the hub's connection limiter keeps each unit to its own limit,
// closing its oldest connections.
func TestUnitConnectionLimits(t *testing.T) {
	t.Run("all units", func(t *testing.T) {
		e := newEnvWith(t, broker.StreamOptions{}, broker.WithUnitLimits(broker.UnitLimits{MaxConnections: 3, MaxConnectionsPerUnit: 1}))
		creds, err := e.srv.Keys().IssueUnitCreds(unitA, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			nc, err := nats.Connect(e.srv.ClientURL(), nats.UserCredentialBytes(creds), nats.NoReconnect())
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			defer nc.Close()
		}
		if _, err := nats.Connect(e.srv.ClientURL(), nats.UserCredentialBytes(creds), nats.NoReconnect()); err == nil ||
			!strings.Contains(err.Error(), "maximum account active connections exceeded") {
			t.Fatalf("fourth connection: %v", err)
		}
		// The hub's own connections are in other accounts.
		if _, err := e.srv.ConnectHub(t.Context()); err != nil {
			t.Fatalf("hub connection: %v", err)
		}
	})

	t.Run("per unit", func(t *testing.T) {
		e := newEnv(t)
		sys, err := e.srv.SystemConn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		l, err := broker.StartConnLimiter(t.Context(), sys, e.srv.Keys(), 2, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Stop)
		credsA, _ := e.srv.Keys().IssueUnitCreds(unitA, time.Hour)
		credsA2, _ := e.srv.Keys().IssueUnitCreds(unitA, time.Hour) // another credential, the same unit
		credsB, _ := e.srv.Keys().IssueUnitCreds(unitB, time.Hour)
		connect := func(creds []byte) *nats.Conn {
			nc, err := nats.Connect(e.srv.ClientURL(), nats.UserCredentialBytes(creds), nats.NoReconnect())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			nc.Flush()
			return nc
		}
		b := connect(credsB)
		var a []*nats.Conn
		for i := range 5 {
			a = append(a, connect([][]byte{credsA, credsA2}[i%2]))
			time.Sleep(10 * time.Millisecond) // distinct start times
		}
		// The three oldest of A's go; A's two newest and B's stay.
		waitFor(t, "A's oldest connections closed", func() bool { return a[0].IsClosed() && a[1].IsClosed() && a[2].IsClosed() })
		for i, nc := range append(a[3:], b) {
			if err := nc.Flush(); err != nil || nc.IsClosed() {
				t.Errorf("connection %d closed: %v", i, err)
			}
		}
		if n := len(unitConnz(t, e)); n != 3 {
			t.Errorf("%d unit connections on the server, want 3", n)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited in vain: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnitShares: what one unit may keep waiting in the streams it writes
// (submissions, statuses, uploads) is bounded by the server; a unit at its
// limit is refused, another unit is not.
func TestUnitShares(t *testing.T) {
	opts := broker.StreamOptions{SubmitUnitPending: 3, StatusUnitPending: 2, UploadUnitQuota: 2 << 20, UploadMaxBytes: 8 << 20}
	e := newEnvWith(t, opts)
	a, b := e.unit(t, unitA), e.unit(t, unitB)
	ctx := t.Context()
	full := func(err error) bool {
		var apiErr *jetstream.APIError
		return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages per subject exceeded")
	}

	t.Run("submissions", func(t *testing.T) {
		for i := range 3 {
			if _, err := a.js.Publish(ctx, protocol.SubmitSubject(unitA), []byte("x"), jetstream.WithMsgID(fmt.Sprint("a", i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.js.Publish(ctx, protocol.SubmitSubject(unitA), []byte("x"), jetstream.WithMsgID("a3")); !full(err) {
			t.Fatalf("A's fourth waiting submission: %v", err)
		}
		if _, err := b.js.Publish(ctx, protocol.SubmitSubject(unitB), []byte("x"), jetstream.WithMsgID("b0")); err != nil {
			t.Fatalf("B: %v", err)
		}
	})

	t.Run("statuses", func(t *testing.T) {
		st := func(i int) *nats.Msg {
			m, _ := protocol.StatusMsg(&document.Status{DocumentID: document.NewID(time.Now()), Unit: unitA, Code: "01", Time: time.Now().Add(time.Duration(i))})
			return m
		}
		for i := range 2 {
			if _, err := a.js.PublishMsg(ctx, st(i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.js.PublishMsg(ctx, st(2)); !full(err) {
			t.Fatalf("A's third waiting status: %v", err)
		}
		// A status above the size limit is refused whatever the count.
		big := nats.NewMsg(protocol.StatusSubject(unitB))
		big.Data = bytes.Repeat([]byte("x"), protocol.MaxStatusSize+8<<10)
		if _, err := b.js.PublishMsg(ctx, big); err == nil || !strings.Contains(err.Error(), "message size exceeds maximum") {
			t.Fatalf("oversized status: %v", err)
		}
	})

	t.Run("uploads", func(t *testing.T) {
		data := make([]byte, 700<<10)
		rand.Read(data)
		var done []*protocol.Container
		var err error
		for range 10 {
			c := &protocol.Container{Data: data, Size: int64(len(data))}
			if err = protocol.UploadStaged(ctx, a.js, unitA, c); err != nil {
				break
			}
			c.Size = int64(len(data))
			done = append(done, c)
		}
		if !full(err) || len(done) == 0 {
			t.Fatalf("A's uploads beyond its quota: %d uploaded, then %v", len(done), err)
		}
		uploads, err := e.hubJS.Stream(ctx, protocol.StreamUpload)
		if err != nil {
			t.Fatal(err)
		}
		info, err := uploads.Info(ctx, jetstream.WithSubjectFilter(protocol.UploadSubject(unitA)))
		if err != nil {
			t.Fatal(err)
		}
		if held := info.State.Bytes; held > 2<<20 {
			t.Fatalf("A holds %d bytes of uploads, quota %d", held, 2<<20)
		}
		// B uploads, and the hub reads it.
		c := &protocol.Container{Data: data, Size: int64(len(data))}
		if err := protocol.UploadStaged(ctx, b.js, unitB, c); err != nil {
			t.Fatalf("B's upload: %v", err)
		}
		c.Size = int64(len(data))
		if got, _, err := protocol.GetUpload(ctx, uploads, unitB, c, int64(len(data))); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("B's upload read back: %v", err)
		}
		// Once the hub has processed (and released) one of A's, A uploads again.
		_, seqs, err := protocol.GetUpload(ctx, uploads, unitA, done[0], int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.ReleaseUpload(ctx, uploads, seqs); err != nil {
			t.Fatal(err)
		}
		if err := protocol.UploadStaged(ctx, a.js, unitA, &protocol.Container{Data: data}); err != nil {
			t.Fatalf("A's upload after a release: %v", err)
		}
	})
}

// TestEnsureStreamsKeepsBacklog: setting a per-unit limit on a stream that
// holds more of a unit's messages keeps them all (the server would trim
// them at once); a later start, once they are gone, applies the limit.
func TestEnsureStreamsKeepsBacklog(t *testing.T) {
	e := newEnvWith(t, broker.StreamOptions{SubmitUnitPending: 10})
	a := e.unit(t, unitA)
	for i := range 6 {
		if _, err := a.js.Publish(t.Context(), protocol.SubmitSubject(unitA), []byte("x"), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := broker.EnsureStreams(t.Context(), e.hubJS, e.stageJS, broker.StreamOptions{SubmitUnitPending: 3}); err != nil {
		t.Fatal(err)
	}
	s, err := e.hubJS.Stream(t.Context(), protocol.StreamSubmit)
	if err != nil {
		t.Fatal(err)
	}
	if info := s.CachedInfo(); info.State.Msgs != 6 || info.Config.MaxMsgsPerSubject != 6 {
		t.Fatalf("after lowering the limit: %d messages, %d per subject", info.State.Msgs, info.Config.MaxMsgsPerSubject)
	}
	if err := s.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureStreams(t.Context(), e.hubJS, e.stageJS, broker.StreamOptions{SubmitUnitPending: 3}); err != nil {
		t.Fatal(err)
	}
	if s, _ = e.hubJS.Stream(t.Context(), protocol.StreamSubmit); s.CachedInfo().Config.MaxMsgsPerSubject != 3 {
		t.Fatalf("limit not applied once drained: %d", s.CachedInfo().Config.MaxMsgsPerSubject)
	}
}

// TestStageConsumersBounded: a unit has at most protocol.StageSlots
// consumers on the stage store, all made by the hub's stage service; it
// cannot delete another unit's; its requests are rate limited.
func TestStageConsumersBounded(t *testing.T) {
	e := newEnv(t)
	a, b := e.unit(t, unitA), e.unit(t, unitB)
	ctx := t.Context()
	stage, err := e.hubConn.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name, _, err := protocol.PutStaged(ctx, stage, bytes.Repeat([]byte("x"), 300<<10))
	if err != nil {
		t.Fatal(err)
	}
	request := func(u *unitClient, unit string, slot int) protocol.StageReply {
		t.Helper()
		body, _ := json.Marshal(protocol.StageRequest{Name: name, Slot: slot})
		m, err := u.nc.Request(protocol.StageSubject(unit), body, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r protocol.StageReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// B holds a consumer.
	if r := request(b, unitB, 0); r.Consumer != protocol.StageConsumer(unitB, 0) {
		t.Fatalf("B's request: %+v", r)
	}
	// A asks again and again, for every slot it may and one it may not.
	for i := range 12 {
		slot := i % (protocol.StageSlots + 1)
		r := request(a, unitA, slot)
		if slot == protocol.StageSlots && (r.Consumer != "" || r.Error == "") {
			t.Fatalf("slot %d granted: %+v", slot, r)
		}
	}
	var mine int
	for _, n := range consumerNames(t, e.stageJS, protocol.StageStream) {
		switch {
		case strings.HasPrefix(n, strings.TrimSuffix(protocol.StageConsumer(unitA, 0), "0")):
			mine++
		case n != protocol.StageConsumer(unitB, 0):
			t.Errorf("unexpected consumer %s", n)
		}
	}
	if mine > protocol.StageSlots {
		t.Fatalf("A holds %d consumers on the stage store, limit %d", mine, protocol.StageSlots)
	}
	// A cannot delete B's.
	del := protocol.StageAPIPrefix + ".CONSUMER.DELETE." + protocol.StageStream + "." + protocol.StageConsumer(unitB, 0)
	if _, err := a.nc.Request(del, nil, 300*time.Millisecond); err == nil {
		t.Fatal("A's delete of B's consumer answered")
	}
	a.waitPermErr(t, del)
	if _, err := e.stageJS.Consumer(ctx, protocol.StageStream, protocol.StageConsumer(unitB, 0)); err != nil {
		t.Fatalf("B's consumer after A's delete: %v", err)
	}
	// A flood of requests is answered "retry later".
	limited := false
	for range 50 {
		if r := request(a, unitA, 0); strings.Contains(r.Error, "retry later") {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("50 stage requests at once, none limited")
	}
}
