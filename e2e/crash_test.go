package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
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
// document): none lost, none doubled; the hub's index, fed by the decision
// events, holds each document once. A consumer may see a message again when
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
	var msgs []*nats.Msg
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
		msgs = append(msgs, protocol.SubmitMsg(a.id, &protocol.Container{DocumentID: d.ID, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(c)), Data: c}))
		sent[d.ID] = true
	}
	// A publishes as an agent does: a unit may have only so many
	// submissions waiting (nats.streams.submit_unit_pending), so a full
	// share, like the hub being down, means waiting and publishing the same
	// message again (Nats-Msg-Id de-duplicates). The hub is killed while A
	// is still publishing; A goes on with its new connection.
	var mu sync.Mutex
	js := a.js
	published := make(chan struct{})
	go func() {
		defer close(published)
		for _, m := range msgs {
			for {
				mu.Lock()
				cur := js
				mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := cur.PublishMsg(ctx, m)
				cancel()
				if err == nil {
					break
				}
				if t.Context().Err() != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	// Kill the hub as soon as it has accepted something.
	notices, err := a.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(a.id)))
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
			if !protocol.IsNotice(m.Headers()) {
				t.Errorf("A received %s", m.Subject())
			}
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
	mu.Lock()
	js = a.js
	mu.Unlock()
	notices, _ = a.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(a.id)))
	for deadline := time.Now().Add(90 * time.Second); len(accepted) < n && time.Now().Before(deadline); {
		take(n, 2*time.Second)
	}
	take(n, time.Second) // anything doubled would show now
	select {
	case <-published:
	case <-time.After(30 * time.Second):
		t.Fatal("A could not publish every document")
	}
	if len(accepted) != n {
		t.Fatalf("%d of %d documents accepted", len(accepted), n)
	}
	for id, seqs := range accepted {
		if !sent[id] || len(seqs) != 1 {
			t.Errorf("document %s: %d acceptance notices in the stream", id, len(seqs))
		}
	}
	// The hub's index, fed by the decision events, has every document
	// once (the events replayed after the kill changed nothing).
	var page struct {
		Items []struct {
			ID document.ID `json:"id"`
		} `json:"items"`
		Total int `json:"total"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		b, err := apiGet(h, "/api/v1/documents?from="+string(a.id)+"&limit=500")
		if err == nil {
			err = json.Unmarshal(b, &page)
		}
		if err == nil && page.Total == n || time.Now().After(deadline) {
			if err != nil || page.Total != n || len(page.Items) != n {
				t.Fatalf("the hub's index: %d documents (%d listed), want %d (%v)", page.Total, len(page.Items), n, err)
			}
			break
		}
	}
	for _, it := range page.Items {
		if !sent[it.ID] {
			t.Errorf("the index holds %s, never sent", it.ID)
		}
	}
	b := connectAs(t, work, h.info.NATSURL, "000.02.00.H29")
	del, err := b.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(b.id)))
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
	// Every acceptance is in the hub's transparency log, those acknowledged
	// before the kill included (the log's journal was synced before any
	// receipt named an entry): each document's proof verifies against the
	// log's key and its entry is that document's acceptance.
	vkey, err := os.ReadFile(filepath.Join(data, "tlog.pub"))
	if err != nil {
		t.Fatal(err)
	}
	lk, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	for id := range sent {
		var dp struct {
			Proof *evidence.Proof `json:"proof"`
		}
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var b []byte
			if b, err = apiGet(h, "/api/v1/documents/"+string(id)+"/proof"); err == nil {
				err = json.Unmarshal(b, &dp)
			}
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("document %s: proof: %v", id, err)
		}
		p := dp.Proof
		if p == nil {
			t.Fatalf("document %s: no proof", id)
		}
		// Inclusion in the signed checkpoint is what is checked here; the
		// trusted time over it is TestAuditCommandLine's.
		p.Timestamp, p.Previous = nil, nil
		if _, err := p.Verify(evidence.ProofOptions{Origin: lk.Name(), LogKey: lk}); err != nil {
			t.Fatalf("document %s: proof: %v", id, err)
		}
		var e evidence.Entry
		if err := json.Unmarshal(p.Entry, &e); err != nil || e.Kind != evidence.Accepted || e.Doc != string(id) {
			t.Fatalf("document %s: entry %d is %s of %s (%v)", id, p.Index, e.Kind, e.Doc, err)
		}
	}
}
