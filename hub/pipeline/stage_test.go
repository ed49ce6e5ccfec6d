package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// streamBytes is how many bytes a stream holds.
func streamBytes(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Bytes
}

// TestFanoutStagedOnce: a document routed to 50 recipients takes about its
// own size in the streams, not 50 times it: a container whose copies would
// add up to more than FanoutStageBytes is staged once, even below the inline
// limit, and every delivery names the one staged object.
func TestFanoutStagedOnce(t *testing.T) {
	for _, size := range []int{2 << 20, 5 << 20} {
		t.Run(fmt.Sprintf("%d MiB", size>>20), func(t *testing.T) {
			e := newEnv(t, uA)
			var to []document.UnitID
			for i := range 50 {
				u := document.UnitID(fmt.Sprintf("000.%02d.01.H29", i+1))
				e.addUnit(u)
				to = append(to, u)
			}
			e.run(e.deps)
			a := e.units[uA]
			id, meta := doc(uA, to...)
			data := a.build(t, meta, size)
			a.submit(t, id, data)
			if n := a.notice(t); n.Type != protocol.NoticeAccepted {
				t.Fatalf("notice %+v", n)
			}
			deliver := streamBytes(t, e.js, protocol.StreamDeliver)
			staged := streamBytes(t, e.hc.StageJS, "OBJ_"+protocol.StageBucket)
			t.Logf("container %d bytes to %d recipients: EDX_DELIVER %d bytes, stage store %d bytes", len(data), len(to), deliver, staged)
			if total := deliver + staged; total > uint64(len(data))*3/2 {
				t.Errorf("the streams hold %d bytes for a container of %d: %.1f×, want about 1×", total, len(data), float64(total)/float64(len(data)))
			}
			// Every delivery names the same object, which each recipient can read.
			var name string
			for i, r := range []document.UnitID{to[0], to[25], to[49]} {
				u := e.units[r]
				msg := u.delivery(t)
				d, err := protocol.ParseDelivery(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
				if err != nil || d.Staged == "" {
					t.Fatalf("delivery to %s: %v, staged %q", r, err, d.Staged)
				}
				if i > 0 && d.Staged != name {
					t.Fatalf("staged twice: %s and %s", name, d.Staged)
				}
				name = d.Staged
				got, err := protocol.GetStaged(t.Context(), u.stage, d.Staged, d.StageKey, int64(len(data)))
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%s reads the staged container: %v", r, err)
				}
			}
		})
	}
}

// lastDelivery reads, without consuming it, the last delivery to a unit.
func (e *env) lastDelivery(u document.UnitID) *protocol.Delivery {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), protocol.StreamDeliver)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(e.t.Context(), protocol.DeliverSubject(string(u)))
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// sweeper is a pipeline, not running, whose stage sweep a test calls.
func (e *env) sweeper(grace time.Duration) *Pipeline {
	e.t.Helper()
	cfg := e.cfg
	cfg.StageGrace = grace
	p, err := New(e.t.Context(), cfg, e.deps)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) sweep(p *Pipeline) stageSweep {
	e.t.Helper()
	res, err := p.sweepStage(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// TestStagedDeliveryOutlivesItsObject: a staged delivery whose object went
// missing (deleted, or expired as under the old seven-day TTL while its
// recipient was offline) is staged again from the archive, under the name
// and key the delivery carries, and the recipient reads it. A staged object
// stays while any waiting delivery names it and is deleted once none does.
// Sweeping never takes a delivery from its unit.
func TestStagedDeliveryOutlivesItsObject(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.cfg.StageSweep = time.Hour // the running pipeline sweeps once, at start; the test sweeps itself
	e.run(e.deps)
	a, b, c := e.units[uA], e.units[uB], e.units[uC]
	id, meta := doc(uA, uB, uC)
	data := a.build(t, meta, protocol.InlineLimit+(1<<20))
	a.submit(t, id, data)
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	d := e.lastDelivery(uB)
	if d.Staged == "" || e.lastDelivery(uC).Staged != d.Staged {
		t.Fatalf("not staged once: %q", d.Staged)
	}
	keep, drop := e.sweeper(time.Hour), e.sweeper(time.Millisecond)

	// B and C are offline; the object goes.
	if err := e.deps.Stage.Delete(t.Context(), d.Staged); err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.GetStaged(t.Context(), b.stage, d.Staged, d.StageKey, int64(len(data))); !errors.Is(err, protocol.ErrStageInvalid) {
		t.Fatalf("deleted object: %v", err)
	}
	if res := e.sweep(drop); res.Restaged != 1 || res.Deleted != 0 || res.Waiting != 2 || res.Named != 1 || !res.Complete {
		t.Fatalf("sweep %+v, want the object staged again", res)
	}
	if e.deliveries(uB) != 1 || e.deliveries(uC) != 1 {
		t.Fatalf("the sweep took deliveries: B %d, C %d", e.deliveries(uB), e.deliveries(uC))
	}
	// B comes back: its delivery, with the key it always had, reads.
	msg := b.delivery(t)
	e.trim() // the hub removes what B acknowledged
	bd, err := protocol.ParseDelivery(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
	if err != nil {
		t.Fatal(err)
	}
	got, err := protocol.GetStaged(t.Context(), b.stage, bd.Staged, bd.StageKey, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("B reads the staged container again: %v", err)
	}
	// C still waits: the object stays, however old.
	if res := e.sweep(drop); res.Deleted != 0 || res.Restaged != 0 || res.Waiting != 1 {
		t.Fatalf("sweep with C waiting: %+v", res)
	}
	if _, err := e.deps.Stage.GetInfo(t.Context(), d.Staged); err != nil {
		t.Fatalf("object gone while C waits: %v", err)
	}
	c.delivery(t)
	e.trim()
	// Nobody waits: removed, but only once older than the grace.
	if res := e.sweep(keep); res.Deleted != 0 || res.Waiting != 0 {
		t.Fatalf("sweep within the grace: %+v", res)
	}
	if res := e.sweep(drop); res.Deleted != 1 {
		t.Fatalf("sweep with no delivery waiting: %+v", res)
	}
	if _, err := e.deps.Stage.GetInfo(t.Context(), d.Staged); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("object still there: %v", err)
	}
}
