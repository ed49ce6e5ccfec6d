package bench

import (
	"runtime"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// TestUnitPullMemory: a unit's pull of its consumer, as agents and the
// bench's simulated units make it (protocol.PullUnit), holds little
// memory: 200 of them take well under 200 MiB of heap (with a byte limit
// alone, nats.go gave each a buffer of a million messages, 8 MB).
func TestUnitPullMemory(t *testing.T) {
	js := testJetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "PULLS", Subjects: []string{"pulls.>"}}); err != nil {
		t.Fatal(err)
	}
	c, err := js.CreateOrUpdateConsumer(t.Context(), "PULLS", jetstream.ConsumerConfig{Durable: "unit", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	const n = 200
	var its []*protocol.UnitPull
	for range n {
		it, err := protocol.PullUnit(js.Conn(), c, 32<<20, 0)
		if err != nil {
			t.Fatal(err)
		}
		its = append(its, it)
	}
	grown := int64(heap()) - int64(before)
	for _, it := range its {
		it.Stop()
	}
	if grown > n<<20 {
		t.Fatalf("%d pulls took %d MiB of heap, want under %d", n, grown>>20, n)
	}
	t.Logf("%d pulls: %d KiB of heap each", n, grown/n>>10)
}
