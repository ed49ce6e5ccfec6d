package bench

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
)

// testJetStream starts a NATS server as the hub does and connects to it
// over TCP as the hub, as the bench connects.
func testJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := broker.Start(t.Context(), broker.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), KeysDir: t.TempDir(),
		MaxStore: broker.TestMaxStore}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	creds, err := srv.Keys().IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentialBytes(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestPublishCeilingLargeMessages: the JetStream ceiling of 1 MiB
// containers publishes them all without the server refusing any: before,
// every message was in flight at once and the stream's ingest queue (128
// MiB) overflowed, "429 too many requests", and edx bench failed at 1 MiB.
func TestPublishCeilingLargeMessages(t *testing.T) {
	js := testJetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "BENCH_CEILING", Subjects: []string{"bench.ceiling"},
		Storage: jetstream.FileStorage, Duplicates: time.Hour, MaxMsgSize: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	const n = 1000
	if _, err := publishCeiling(js, "bench.ceiling", data, n); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), "BENCH_CEILING")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != n {
		t.Fatalf("%d messages stored, want %d", got, n)
	}
}
