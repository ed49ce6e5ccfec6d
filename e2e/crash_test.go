package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// unitConn is a unit's connection, from the files edx unit add wrote.
type unitConn struct {
	id     document.UnitID
	nc     *nats.Conn
	js     jetstream.JetStream
	signer *pki.Signer
}

func connectAs(t *testing.T, work string, url string, id document.UnitID) *unitConn {
	t.Helper()
	dir := filepath.Join(work, "units", string(id))
	creds, err := os.ReadFile(filepath.Join(dir, "nats.creds"))
	if err != nil {
		t.Fatal(err)
	}
	nc, js, _, err := protocol.ConnectUnit(t.Context(), url, creds, id, nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := pki.LoadSigner(filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &unitConn{id: id, nc: nc, js: js, signer: s}
}

// TestHubKilledMidStream: unit A queues 200 documents for B; the hub is
// killed (SIGKILL) while it works through them and started again on the same
// data. Every document is accepted, and each acceptance notice and each
// delivery to B is in the streams exactly once (one stream sequence per
// document): none lost, none doubled. A consumer may see a message again when
// the kill took its ack with it (JetStream redelivers the same sequence);
// agents de-duplicate those by document id.
func TestHubKilledMidStream(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	h := startHub(t, data)
	for _, u := range []string{"000.01.00.H29", "000.02.00.H29"} {
		edx(t, work, 0, "unit", "add", "--data", data, "--unit", u, "--name", "Đơn vị "+u)
	}
	a := connectAs(t, work, h.info.NATSURL, "000.01.00.H29")
	const n = 200
	sent := map[document.ID]bool{}
	for i := 0; i < n; i++ {
		d := document.Template(time.Now())
		d.From, d.To = a.id, []document.UnitID{"000.02.00.H29"}
		meta, _ := d.Marshal()
		payload := make([]byte, 32<<10)
		for j := range payload {
			payload[j] = byte(i + j)
		}
		c, err := container.Build(meta, []container.File{{Name: "vb.pdf", Data: payload}}, a.signer)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(c)
		// Past the unit's 32 submissions waiting, wait for the hub (submit).
		if err := submit(t.Context(), a.js, protocol.SubmitMsg(a.id, &protocol.Container{DocumentID: d.ID, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(c)), Data: c})); err != nil {
			t.Fatal(err)
		}
		sent[d.ID] = true
	}
	// Kill the hub as soon as it has accepted something.
	notices, err := a.js.Consumer(t.Context(), protocol.StreamNotice, protocol.NoticeConsumer(string(a.id)))
	if err != nil {
		t.Fatal(err)
	}
	accepted := map[document.ID]map[uint64]bool{} // stream sequences per document
	take := func(max int, wait time.Duration) {
		batch, err := notices.Fetch(max, jetstream.FetchMaxWait(wait))
		if err != nil {
			return
		}
		for m := range batch.Messages() {
			nt, err := protocol.ParseNotice(&nats.Msg{Data: m.Data()})
			if err == nil && nt.Type == protocol.NoticeAccepted {
				md, _ := m.Metadata()
				if accepted[nt.DocumentID] == nil {
					accepted[nt.DocumentID] = map[uint64]bool{}
				}
				accepted[nt.DocumentID][md.Sequence.Stream] = true
			} else if err == nil {
				t.Errorf("notice %s for %s: %v", nt.Type, nt.DocumentID, nt.Reasons)
			}
			m.Ack()
		}
	}
	for len(accepted) == 0 {
		take(1, 5*time.Second)
	}
	h.kill()
	t.Logf("killed the hub after %d acceptances", len(accepted))
	h = startHub(t, data)
	a = connectAs(t, work, h.info.NATSURL, "000.01.00.H29")
	notices, _ = a.js.Consumer(t.Context(), protocol.StreamNotice, protocol.NoticeConsumer(string(a.id)))
	for deadline := time.Now().Add(90 * time.Second); len(accepted) < n && time.Now().Before(deadline); {
		take(n, 2*time.Second)
	}
	take(n, time.Second) // anything doubled would show now
	if len(accepted) != n {
		t.Fatalf("%d of %d documents accepted", len(accepted), n)
	}
	for id, seqs := range accepted {
		if !sent[id] || len(seqs) != 1 {
			t.Errorf("document %s: %d acceptance notices in the stream", id, len(seqs))
		}
	}
	b := connectAs(t, work, h.info.NATSURL, "000.02.00.H29")
	del, err := b.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.DeliverConsumer(string(b.id)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[document.ID]map[uint64]bool{}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		batch, err := del.Fetch(n, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			break
		}
		k := 0
		for m := range batch.Messages() {
			d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			if err != nil {
				t.Fatal(err)
			}
			md, _ := m.Metadata()
			if got[d.DocumentID] == nil {
				got[d.DocumentID] = map[uint64]bool{}
			}
			got[d.DocumentID][md.Sequence.Stream] = true
			m.Ack()
			k++
		}
		if k == 0 && len(got) == n {
			break
		}
	}
	if len(got) != n {
		t.Fatalf("B received %d of %d documents", len(got), n)
	}
	for id, seqs := range got {
		if len(seqs) != 1 {
			t.Errorf("document %s delivered %d times", id, len(seqs))
		}
	}
}
