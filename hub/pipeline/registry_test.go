package pipeline

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// TestUnitsOfAnotherHub: the pipeline of a second hub — its own index, which
// holds no unit, and its own registry view, frozen (its watch stopped, so
// only lookups reach the bucket) — accepts documents from and to units
// registered through the first hub, one of them a moment before it is
// used: senders and recipients are judged by the shared registry, never by
// what one hub indexed. Zero sender.unknown, zero recipient.unknown.
func TestUnitsOfAnotherHub(t *testing.T) {
	e := newEnv(t, uA, uB) // registered through hub 1 (its registry and index)
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ix2, err := index.Open(ctx, index.Config{Path: t.TempDir() + "/hub2.db"}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix2.Close() })
	h2 := e.hubConn()
	r2, err := registry.Open(ctx, h2.JS, broker.BucketOptions{MaxBytes: 1 << 20}, e.arch, log)
	if err != nil {
		t.Fatal(err)
	}
	r2.Close()
	deps := e.deps
	deps.JS, deps.Stage, deps.Index, deps.Units, deps.Metrics = h2.JS, e.stage(h2), ix2, r2, NewMetrics(nil)
	e.run(deps)

	c := e.addUnit(uC) // through hub 1, after hub 2 started
	a := e.units[uA]
	for _, s := range []struct {
		from *unit
		to   []document.UnitID
	}{{a, []document.UnitID{uB, uC}}, {c, []document.UnitID{uA}}, {a, []document.UnitID{uC}}} {
		id, meta := doc(s.from.id, s.to...)
		s.from.submit(t, id, s.from.build(t, meta, 2000))
		if n := s.from.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
			t.Fatalf("%s to %v on hub 2: %s %v", s.from.id, s.to, n.Type, n.Reasons.Codes())
		}
	}
	for _, code := range []reason.Code{reason.SenderUnknown, reason.RecipientUnknown} {
		if n := value(deps.Metrics.rejected.WithLabelValues(string(code))); n != 0 {
			t.Fatalf("%s: %v", code, n)
		}
	}
	// The pipeline counts an acceptance after it has notified the sender,
	// so the last count may come a moment after the last notice.
	n := value(deps.Metrics.accepted)
	for deadline := time.Now().Add(10 * time.Second); n < 3 && time.Now().Before(deadline); n = value(deps.Metrics.accepted) {
		time.Sleep(10 * time.Millisecond)
	}
	if n != 3 {
		t.Fatalf("accepted %v", n)
	}
}

// TestRegistryUnreachable: while the registry's bucket cannot be reached,
// a submission from a unit the view does not know is naked and retried
// (a transient failure), never rejected; once it can, the document is
// accepted.
func TestRegistryUnreachable(t *testing.T) {
	e := newEnv(t, uA, uB)
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	proxy := newFlakyProxy(t, strings.TrimPrefix(e.srv.ClientURL(), "nats://"))
	creds, err := e.srv.Keys().IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	stageCreds, err := e.srv.Keys().IssueHubStageCreds()
	if err != nil {
		t.Fatal(err)
	}
	// The registry's connection goes through the proxy, and fails its
	// requests at once while it is down (no reconnect buffer).
	hc, err := broker.ConnectHub(ctx, "nats://"+proxy.ln.Addr().String(), creds, stageCreds,
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.Close)
	r2, err := registry.Open(ctx, hc.JS, broker.BucketOptions{MaxBytes: 1 << 20}, e.arch, log)
	if err != nil {
		t.Fatal(err)
	}
	r2.Close() // a frozen view: C is looked up in the bucket
	proxy.setDown(true)
	c := e.addUnit(uC)
	deps := e.deps
	deps.Units, deps.Metrics = r2, NewMetrics(nil)
	e.run(deps)

	id, meta := doc(uC, uA)
	c.submit(t, id, c.build(t, meta, 2000))
	for deadline := time.Now().Add(30 * time.Second); value(deps.Metrics.transient) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no transient failure while the registry is unreachable")
		}
	}
	proxy.setDown(false)
	if n := c.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("after the registry came back: %s %v", n.Type, n.Reasons.Codes())
	}
	if n := value(deps.Metrics.rejected.WithLabelValues(string(reason.SenderUnknown))); n != 0 {
		t.Fatalf("sender.unknown while the registry was unreachable: %v", n)
	}
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
