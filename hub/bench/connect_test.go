package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestConnectWaitsForTheConsumer: a unit whose consumer the hub's NATS
// cannot give at first (here: not there for a while; on a loaded machine
// with 10,000 units, a lookup that timed out) is looked up again, as an
// agent does, instead of failing the whole run (before: a 10,000-unit run
// ended after 11 minutes of registering with "context deadline exceeded").
func TestConnectWaitsForTheConsumer(t *testing.T) {
	h := runningHub(t)
	id := document.UnitID("001.00.00.B01")
	b := registerUnit(t, h, id)

	// As the hub: take the unit's consumer away, and give it back later.
	js := hubJetStream(t, h)
	name := protocol.UnitConsumer(string(id))
	cons, err := js.Consumer(t.Context(), protocol.StreamDeliver, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	if err := js.DeleteConsumer(t.Context(), protocol.StreamDeliver, name); err != nil {
		t.Fatal(err)
	}
	back := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second)
		_, err := js.CreateOrUpdateConsumer(t.Context(), protocol.StreamDeliver, cfg)
		back <- err
	}()

	r := &run{o: Options{Size: 4 << 10, Log: slog.New(slog.DiscardHandler)}}
	u, err := r.connect(t.Context(), id, []byte(b.KeyPEM), []byte(b.CertPEM), []byte(b.Creds), b.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer u.nc.Close()
	for _, it := range u.its {
		defer it.Stop()
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
}

// TestRegisterStopsAtTheFirstError: when one unit cannot be registered, the
// bench stops registering the others and reports the error, instead of
// registering and connecting every other unit first (before: a 10,000-unit
// run failed at its 1,157th unit and went on for 10 more minutes).
func TestRegisterStopsAtTheFirstError(t *testing.T) {
	h := runningHub(t)
	target, err := url.Parse(h.Info().HTTP)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/api/v1/units" && posts.Add(1) == 1 {
			http.Error(w, "the first registration fails", http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	const units = 120
	_, err = Run(t.Context(), Options{HubURL: srv.URL, Token: h.AdminToken(), Units: units, Docs: 1, Size: 4 << 10})
	if err == nil || !strings.Contains(err.Error(), "the first registration fails") {
		t.Fatalf("want the registration's error, got %v", err)
	}
	// 16 registrations run at once: each that was under way may finish,
	// and none starts after.
	if n := posts.Load(); n > 48 {
		t.Fatalf("%d of %d units registered after the first failed", n-1, units)
	}
}

// registered is a unit's registration as the hub's API returns it.
type registered struct {
	KeyPEM  string `json:"key_pem"`
	CertPEM string `json:"cert_pem"`
	Creds   string `json:"nats_creds"`
	NATSURL string `json:"nats_url"`
}

// hubJetStream connects to h's NATS as the hub, closed when the test ends.
func hubJetStream(t *testing.T, h *hub.Hub) jetstream.JetStream {
	t.Helper()
	keys, err := broker.LoadOrCreateKeys(filepath.Join(h.Info().Data, "nats", "keys"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := keys.IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(h.Info().NATSURL, nats.UserCredentialBytes(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func registerUnit(t *testing.T, h *hub.Hub, id document.UnitID) registered {
	t.Helper()
	var b registered
	req, _ := http.NewRequest("POST", h.Info().HTTP+"/api/v1/units", strings.NewReader(fmt.Sprintf(`{"id":%q,"name":"Đơn vị %s"}`, id, id)))
	req.Header.Set("Authorization", "Bearer "+h.AdminToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(raw, &b) != nil {
		t.Fatalf("register %s: %s %s", id, resp.Status, raw)
	}
	return b
}

// TestConnectCountsReconnects: a unit's connection that reconnects is
// counted (Result.Reconnects), and its pull goes on at once: the request it
// had waiting on the server is gone from there (the pull ended it at the
// reconnect; a request left waiting would swallow every other message to
// the unit until its expiry, 10 minutes, each found lost only at the ack
// wait), and a message sent after the reconnect arrives without being
// redelivered. A delivery of 30 s or more in a run is then explained by the
// reconnects and redeliveries the bench prints.
func TestConnectCountsReconnects(t *testing.T) {
	h := runningHub(t)
	id := document.UnitID("001.00.00.B02")
	b := registerUnit(t, h, id)
	r := &run{o: Options{Size: 4 << 10, Log: slog.New(slog.DiscardHandler)}, acc: map[document.ID]map[uint64]time.Time{}}
	u, err := r.connect(t.Context(), id, []byte(b.KeyPEM), []byte(b.CertPEM), []byte(b.Creds), b.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer u.nc.Close()
	for _, it := range u.its {
		defer it.Stop()
	}

	// As the hub: the unit's consumer, and what waits on it.
	js := hubJetStream(t, h)
	waiting := func() int {
		t.Helper()
		c, err := js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(id)))
		if err != nil {
			t.Fatal(err)
		}
		return c.CachedInfo().NumWaiting
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	until("the unit's pull request never reached the server", func() bool { return waiting() == 1 })

	if err := u.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	until("the reconnect was not counted", func() bool { return r.reconnects.Load() == 1 })
	until("the pull did not ask again after the reconnect", func() bool { return u.its[0].Pulls() == 2 })
	time.Sleep(500 * time.Millisecond) // the server had time to drop the old request
	if n := waiting(); n != 1 {
		t.Fatalf("%d pull requests waiting on the server after the reconnect, want the new one only", n)
	}

	n := protocol.Notice{Type: protocol.NoticeAccepted, DocumentID: "reconnect-test"}
	m, err := protocol.NoticeMsg(id, &n, "reconnect-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	// 10 s: well under the ack wait (30 s) that a lost delivery would take.
	until("the notice sent after the reconnect did not come", func() bool { return r.nAcc.Load() == 1 })
	if got := r.redelivered.Load(); got != 0 {
		t.Fatalf("%d redelivered, want 0", got)
	}
}
