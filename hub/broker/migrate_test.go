package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// legacyStreams creates EDX_DELIVER and EDX_NOTICE as an earlier version
// did (interest retention, a consumer per unit on each) and fills them:
// unit A has had d1 and n1 acknowledged, d2 delivered and not
// acknowledged, d3 and n2 waiting; unit B has d4 and n3 waiting.
func legacyStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := t.Context()
	for _, s := range []struct{ name, prefix string }{{protocol.StreamDeliver, protocol.SubjectDeliverPrefix}, {protocol.LegacyStreamNotice, protocol.LegacySubjectNoticePrefix}} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: s.name, Subjects: []string{s.prefix + ">"}, Retention: jetstream.InterestPolicy,
			Storage: jetstream.FileStorage, Duplicates: broker.DefaultDuplicates, MaxBytes: 64 << 20, MaxMsgSize: broker.DefaultMaxPayload,
			Discard: jetstream.DiscardNew, MaxConsumers: broker.MaxUnitConsumers}); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{unitA, unitB} {
			name := protocol.UnitConsumer(u)
			subj := protocol.DeliverSubject(u)
			if s.name == protocol.LegacyStreamNotice {
				name, subj = protocol.LegacyNoticeConsumer(u), protocol.LegacySubjectNoticePrefix+u
			}
			if _, err := js.CreateConsumer(ctx, s.name, jetstream.ConsumerConfig{Durable: name, FilterSubject: subj, AckPolicy: jetstream.AckExplicitPolicy,
				AckWait: broker.UnitAckWait, MaxDeliver: -1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub := func(subj, id, body string) {
		m := nats.NewMsg(subj)
		m.Header.Set(nats.MsgIdHdr, id)
		m.Header.Set("Edx-Test", body)
		m.Data = []byte(body)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub(protocol.DeliverSubject(unitA), "d1."+unitA, "d1")
	pub(protocol.LegacySubjectNoticePrefix+unitA, "n1.accepted", "n1")
	pub(protocol.DeliverSubject(unitA), "d2."+unitA, "d2")
	pub(protocol.DeliverSubject(unitB), "d4."+unitB, "d4")
	pub(protocol.DeliverSubject(unitA), "d3."+unitA, "d3")
	pub(protocol.LegacySubjectNoticePrefix+unitA, "n2.accepted", "n2")
	pub(protocol.LegacySubjectNoticePrefix+unitB, "n3.accepted", "n3")
	take := func(stream, consumer string, n int, ack bool) {
		c, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if ack {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	take(protocol.StreamDeliver, protocol.UnitConsumer(unitA), 1, true)              // d1
	take(protocol.LegacyStreamNotice, protocol.LegacyNoticeConsumer(unitA), 1, true) // n1
	take(protocol.StreamDeliver, protocol.UnitConsumer(unitA), 1, false)             // d2, in the agent's hands
	if st, err := js.Stream(ctx, protocol.StreamDeliver); err != nil || st.CachedInfo().State.Msgs != 3 {
		t.Fatalf("legacy %s: %v", protocol.StreamDeliver, err)
	}
}

// received fetches everything unit's consumer brings within a moment, and
// acks it.
func received(t *testing.T, js jetstream.JetStream, unit string) []string {
	t.Helper()
	c, err := js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(unit))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		b, err := c.Fetch(10, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			h := m.Headers()
			if h.Get("Edx-Test") != string(m.Data()) || h.Get(nats.MsgIdHdr) == "" || h.Get("Edx-Migrated-From") != "" || h.Get("Edx-Migrated-Msg-Id") != "" {
				t.Errorf("%s: headers %v", m.Data(), h)
			}
			kind := "d"
			if protocol.IsNotice(m.Headers()) {
				kind = "n"
			}
			if string(m.Data())[:1] != kind || protocol.UnitFromSubject(m.Subject()) != unit {
				t.Errorf("%s on %s", m.Data(), m.Subject())
			}
			got = append(got, string(m.Data()))
			m.Ack()
		}
		if n == 0 {
			return got
		}
	}
}

// TestMigrateUnitStreams: an earlier version's EDX_DELIVER and EDX_NOTICE
// (interest retention, two consumers per unit) move into the one
// EDX_DELIVER, each unit reading what it had not acknowledged with its one
// consumer: nothing lost, nothing doubled, whatever step a crash stops the
// move at; the next start finishes it.
func TestMigrateUnitStreams(t *testing.T) {
	for _, crash := range []string{"", "retired", "held " + protocol.StreamDeliver, "held " + protocol.LegacyStreamNotice, "deleted", "created", "copied"} {
		t.Run(fmt.Sprintf("crash %q", crash), func(t *testing.T) {
			srv := startServer(t, t.TempDir(), t.TempDir())
			t.Cleanup(srv.Shutdown)
			h := hubConn(t, srv)
			js := h.JS
			ctx := t.Context()
			legacyStreams(t, js)
			if crash != "" {
				broker.SetMigrateHook(func(step string) error {
					if step == crash {
						return errors.New("crash")
					}
					return nil
				})
				err := broker.EnsureStreams(ctx, js, h.StageJS, broker.StreamOptions{})
				broker.SetMigrateHook(nil)
				if err == nil {
					t.Fatal("no crash")
				}
				if crash == "retired" {
					// The old streams take nothing more: a hub publishing
					// now is refused, and retries.
					pctx, cancel := context.WithTimeout(ctx, time.Second)
					_, err := js.Publish(pctx, protocol.DeliverSubject(unitA), []byte("x"))
					cancel()
					if err == nil {
						t.Fatal("a retired stream took a delivery")
					}
				}
			}
			m, err := broker.MigrateUnitStreams(ctx, js, broker.StreamOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if crash == "" && (m.Held != 5 || m.Copied != 5) {
				t.Errorf("migration %+v, want 5 held and copied", m)
			}
			if err := broker.EnsureStreams(ctx, js, h.StageJS, broker.StreamOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, gone := range []string{protocol.LegacyStreamNotice, "EDX_MIGRATE"} {
				if _, err := js.Stream(ctx, gone); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Errorf("%s: %v", gone, err)
				}
			}
			st, err := js.Stream(ctx, protocol.StreamDeliver)
			if err != nil {
				t.Fatal(err)
			}
			if cfg := st.CachedInfo().Config; cfg.Retention != jetstream.LimitsPolicy || len(cfg.Subjects) != 1 {
				t.Fatalf("%s: %+v", protocol.StreamDeliver, cfg)
			}
			if n, err := broker.EnsureUnitConsumers(ctx, js, []string{unitA, unitB}, ""); err != nil || n != 2 {
				t.Fatalf("consumers: %d, %v", n, err)
			}
			// Deliveries first, then notices, each in its order; d2,
			// which the agent had not acknowledged, comes again.
			if got := received(t, js, unitA); !slices.Equal(got, []string{"d2", "d3", "n2"}) {
				t.Errorf("unit A received %q", got)
			}
			if got := received(t, js, unitB); !slices.Equal(got, []string{"d4", "n3"}) {
				t.Errorf("unit B received %q", got)
			}
			// New deliveries go to the new stream; a copy published again
			// (the same Nats-Msg-Id) is dropped.
			if _, err := js.Publish(ctx, protocol.DeliverSubject(unitA), []byte("d5"), jetstream.WithMsgID("d5."+unitA)); err != nil {
				t.Fatal(err)
			}
			if ack, err := js.Publish(ctx, protocol.DeliverSubject(unitA), []byte("d3"), jetstream.WithMsgID("d3."+unitA)); err != nil || !ack.Duplicate {
				t.Errorf("d3 again: %+v, %v", ack, err)
			}
		})
	}
}
