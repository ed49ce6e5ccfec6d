package hub

import (
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestHealthStreamBounded: the readiness check's stream is bounded like
// every other, so that JetStream reserves its bytes with theirs, and a
// write check still goes through once it is full (it drops its oldest).
func TestHealthStreamBounded(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	srv, err := broker.Start(ctx, broker.Config{Listen: "127.0.0.1:-1", StoreDir: dir + "/js", KeysDir: dir + "/keys", MaxStore: broker.TestMaxStore}, slog.New(slog.DiscardHandler))
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

// TestNewRefusesStreamsThatDoNotFit: a JetStream store smaller than the
// streams' reserved bytes stops the hub at start with an error that says
// what to change, and New stops what it had started (before, the cleanup
// of a failed New dereferenced the nil hub it was about to return).
func TestNewRefusesStreamsThatDoNotFit(t *testing.T) {
	var cfg Config
	cfg.Data = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.Embedded.Listen = "127.0.0.1:-1"
	cfg.NATS.Embedded.MaxStore = 64 << 20 // the default streams reserve far more
	cfg.S3.EmbeddedListen = "127.0.0.1:0"
	h, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		h.Close()
		t.Fatal("started with streams that do not fit in JetStream's store")
	}
	if h != nil || !strings.Contains(err.Error(), "the streams need at least") {
		t.Fatalf("hub %v, error %v", h, err)
	}
}

// TestSmallStoreFitsDefaults: an embedded JetStream store smaller than the
// default streams (some 12 GiB, JetStream's store being 75% of the free
// disk) no longer keeps the hub from starting: the defaults shrink to fit,
// the hub takes documents, and a restart with more room keeps the sizes the
// streams were created with (lowering or raising a stream's max_bytes under
// its messages is never done behind the operator's back).
func TestSmallStoreFitsDefaults(t *testing.T) {
	cfg := testConfig(t)
	cfg.NATS.Embedded.MaxStore = 1 << 30
	h := startHub(t, cfg)
	a, b := h.register(uA), h.register(uB)
	id := a.send(a.signer, uB)
	if d := b.delivery(); d.DocumentID != id {
		t.Fatalf("delivered %s, sent %s", d.DocumentID, id)
	}
	sizes := func(h *running) map[string]int64 {
		out := map[string]int64{}
		for _, name := range []string{protocol.StreamSubmit, protocol.StreamDeliver, protocol.StreamStatus, protocol.StreamUpload, protocol.StreamEvents} {
			st, err := h.js.Stream(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = st.CachedInfo().Config.MaxBytes
		}
		return out
	}
	first := sizes(h)
	var sum int64
	for _, v := range first {
		sum += v
	}
	if first[protocol.StreamDeliver] >= broker.DefaultDeliverMaxBytes || sum > 1<<30 {
		t.Fatalf("streams not fitted to a 1 GiB store: %v (sum %d MiB)", first, sum>>20)
	}
	h.stop()
	cfg.NATS.Embedded.MaxStore = 32 << 30
	h = startHub(t, cfg)
	if again := sizes(h); !maps.Equal(again, first) {
		t.Fatalf("restarted with more room, the streams changed size: %v, were %v", again, first)
	}
}
