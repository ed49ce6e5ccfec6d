package broker_test

import (
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// BenchmarkPublish64KiB measures a unit publishing 64 KiB submissions with
// a Nats-Msg-Id to EDX_SUBMIT on the embedded server (file storage, 24h
// de-duplication window): the bare ceiling of the submission path, before
// any hub work. "sync" waits for each ack; "async" keeps up to 256 in flight.
func BenchmarkPublish64KiB(b *testing.B) {
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	subject := protocol.SubmitSubject(unitA)

	b.Run("sync", func(b *testing.B) {
		e := newEnv(b)
		a := e.unit(b, unitA)
		ctx := b.Context()
		b.SetBytes(int64(len(payload)))
		i := 0
		for b.Loop() {
			i++
			if _, err := a.js.Publish(ctx, subject, payload, jetstream.WithMsgID("doc-"+strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("async", func(b *testing.B) {
		e := newEnv(b)
		a := e.unit(b, unitA)
		js, err := jetstream.New(a.nc, jetstream.WithPublishAsyncMaxPending(256),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) { b.Error(err) }))
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(payload)))
		i := 0
		for b.Loop() {
			i++
			if _, err := js.PublishAsync(subject, payload, jetstream.WithMsgID("doc-"+strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("async publishes not acknowledged")
		}
		if n := js.PublishAsyncPending(); n != 0 {
			b.Fatalf("%d pending", n)
		}
	})
}
