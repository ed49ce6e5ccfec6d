package hub

import (
	"log/slog"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
)

// TestHealthStreamBounded: the readiness check's stream is bounded like
// every other, so that JetStream reserves its bytes with theirs, and a
// write check still goes through once it is full (it drops its oldest).
func TestHealthStreamBounded(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srv, err := broker.Start(ctx, broker.Config{Listen: "127.0.0.1:-1", StoreDir: dir + "/js", KeysDir: dir + "/keys"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	hc, err := srv.ConnectHub(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.Close)
	if err := ensureHealthStream(ctx, hc.JS, 1); err != nil {
		t.Fatal(err)
	}
	st, err := hc.JS.Stream(ctx, healthStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxBytes <= 0 || cfg.MaxMsgs <= 0 || cfg.MaxMsgSize <= 0 || cfg.Discard != jetstream.DiscardOld {
		t.Fatalf("%s unbounded: max bytes %d, max msgs %d, max msg size %d", healthStream, cfg.MaxBytes, cfg.MaxMsgs, cfg.MaxMsgSize)
	}
	// Full (a message per subject, as many subjects as messages allowed
	// and more): the next write check still goes through.
	for i := range healthMaxMsgs + 10 {
		if _, err := hc.JS.Publish(ctx, healthSubject+strconv.Itoa(i), []byte("x")); err != nil {
			t.Fatalf("write check %d: %v", i, err)
		}
	}
	if _, err := hc.JS.Publish(ctx, healthSubject+"last", []byte("x")); err != nil {
		t.Fatalf("write check on a full %s: %v", healthStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs > healthMaxMsgs {
		t.Errorf("%s holds %d messages, limit %d", healthStream, info.State.Msgs, healthMaxMsgs)
	}
}
