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
	var b struct {
		KeyPEM  string `json:"key_pem"`
		CertPEM string `json:"cert_pem"`
		Creds   string `json:"nats_creds"`
		NATSURL string `json:"nats_url"`
	}
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

	// As the hub: take the unit's consumer away, and give it back later.
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
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
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
