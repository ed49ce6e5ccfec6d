package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// BenchmarkPipeline measures the hub's throughput on real components
// (embedded NATS, the versitygw S3 gateway in a helper process, SQLite):
// b.N signed containers queued by unit A for B and C, timed from the first
// publish to the last acceptance notice. Each document is verified,
// archived with its receipt, indexed and routed to two recipients.
func BenchmarkPipeline(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			e := newEnv(b, uA, uB, uC)
			e.cfg.Workers = 8
			e.run(e.deps)
			a := e.units[uA]
			msgs := make([]*nats.Msg, b.N)
			for i := range msgs {
				id, meta := doc(uA, uB, uC)
				data := a.build(b, meta, size)
				sum := sha256.Sum256(data)
				msgs[i] = protocol.SubmitMsg(uA, &protocol.Container{DocumentID: id, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data})
			}
			cons, err := a.js.Consumer(b.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(uA)))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			go func() {
				for _, m := range msgs {
					if _, err := a.js.PublishMsgAsync(m); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			seen := map[document.ID]bool{}
			last := time.Now()
			for len(seen) < b.N {
				// Fetch returns at 256 messages or after the wait: keep the
				// wait short so that the last batch is not timed as idle.
				batch, err := cons.Fetch(256, jetstream.FetchMaxWait(50*time.Millisecond))
				if err != nil {
					b.Fatal(err)
				}
				k := 0
				for m := range batch.Messages() {
					if !protocol.IsNotice(m.Headers()) {
						continue // uA receives nothing
					}
					n, err := protocol.ParseNotice(&nats.Msg{Data: m.Data()})
					if err != nil || n.Type != protocol.NoticeAccepted {
						b.Fatalf("notice %v %+v", err, n)
					}
					seen[n.DocumentID] = true
					m.Ack()
					k++
				}
				if k > 0 {
					last = time.Now()
				} else if time.Since(last) > 30*time.Second {
					b.Fatalf("stalled at %d of %d", len(seen), b.N)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "docs/s")
		})
	}
}
