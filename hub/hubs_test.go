package hub

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// cluster is an external nats-server (configured as edx-hub nats-config
// prints it) and the configuration every hub on it shares: the keys
// directory, the hub credentials, one archive bucket, one development CA.
type cluster struct {
	t    *testing.T
	base Config
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	keysDir := t.TempDir()
	keys, err := broker.LoadOrCreateKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:-1\nmax_payload: 8MB\njetstream { store_dir: %q, max_file_store: 64GB }\n%s",
		filepath.Join(dir, "js"), keys.FullResolverConfig(filepath.Join(dir, "jwt")))), 0o600)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	for name, issue := range map[string]func() ([]byte, error){"hub.creds": keys.IssueHubCreds, "hub-stage.creds": keys.IssueHubStageCreds} {
		b, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	cfg := testConfig(t)
	cfg.NATS.URL, cfg.NATS.KeysDir = ns.ClientURL(), keysDir
	cfg.NATS.CredsFile, cfg.NATS.StageCredsFile = filepath.Join(dir, "hub.creds"), filepath.Join(dir, "hub-stage.creds")
	ca := filepath.Join(dir, "pki")
	cfg.PKI.DevCA, cfg.PKI.Trust = ca, filepath.Join(ca, "roots.pem")
	cfg.PKI.HubKey, cfg.PKI.HubCert = filepath.Join(ca, "hub.key.pem"), filepath.Join(ca, "hub.cert.pem")
	return &cluster{t: t, base: cfg}
}

// hub starts another hub on the cluster, with a data directory of its own.
func (c *cluster) hub(edit ...func(*Config)) *running {
	c.t.Helper()
	cfg := c.base
	cfg.Data = c.t.TempDir()
	for _, e := range edit {
		e(&cfg)
	}
	return startHub(c.t, cfg)
}

// search asks a hub's API for every document, newest first.
func (r *running) search(query string) []document.ID {
	r.t.Helper()
	var page index.Page
	if code := r.api("GET", "/api/v1/documents?limit=100"+query, nil, &page); code != http.StatusOK {
		r.t.Fatalf("search: %d", code)
	}
	var ids []document.ID
	for _, s := range page.Items {
		ids = append(ids, s.ID)
	}
	return ids
}

// gate is a rebuild's progress that holds the rebuild until opened.
type gate struct {
	started chan struct{}
	open    chan struct{}
	once    sync.Once
}

func (g *gate) Start(int) { g.once.Do(func() { close(g.started) }) }
func (g *gate) Done(int)  { <-g.open }

// TestHubsShareTheIndex: two hubs on one NATS server and one archive, each
// with its own data directory and index. Units registered through hub 1
// are known to hub 2; documents accepted by either are found by both. A
// third hub started from an empty data directory is not ready while it
// catches up (it says so, with its progress), then answers every search as
// the others do.
func TestHubsShareTheIndex(t *testing.T) {
	c := newCluster(t)
	h1 := c.hub()
	h2 := c.hub()
	a, b := h1.register(uA), h1.register(uB)
	eventually(t, "hub 2 knows the units registered through hub 1", func() bool {
		var v api.UnitView
		return h2.api("GET", "/api/v1/units/"+string(uB), nil, &v) == http.StatusOK
	})
	var sent []document.ID
	for range 6 {
		sent = append(sent, a.send(a.signer, uB))
		if n := a.notice(); n.Type != protocol.NoticeAccepted {
			t.Fatalf("notice %s %v", n.Type, n.Reasons.Codes())
		}
	}
	for range sent {
		d := b.delivery()
		st := &document.Status{DocumentID: d.DocumentID, Unit: uB, Time: time.Now().UTC(), Code: document.StatusDelivered}
		m, _ := protocol.StatusMsg(st)
		if _, err := b.js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		if n := a.notice(); n.Type != protocol.NoticeStatus {
			t.Fatalf("status notice %s %v", n.Type, n.Reasons.Codes())
		}
	}
	slices.Reverse(sent) // newest first, as search answers
	for _, h := range []*running{h1, h2} {
		eventually(t, "every document, delivered, on "+h.Info().HTTP, func() bool {
			return slices.Equal(h.search(""), sent) && slices.Equal(h.search("&status=01"), sent)
		})
	}

	g := &gate{started: make(chan struct{}), open: make(chan struct{})}
	h3 := c.hub(func(cfg *Config) { cfg.Progress = g })
	select {
	case <-g.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the new hub did not start rebuilding its index")
	}
	code, checks := h3.readyz()
	if code != http.StatusServiceUnavailable || !strings.Contains(checks["events"], "catching up: rebuilding the index from the archive") ||
		!strings.Contains(checks["events"], "of") {
		t.Fatalf("readyz while catching up: %d %v", code, checks)
	}
	// The others are not affected.
	if code, checks := h1.readyz(); code != http.StatusOK {
		t.Fatalf("hub 1 while hub 3 catches up: %d %v", code, checks)
	}
	close(g.open)
	eventually(t, "hub 3 ready", func() bool { code, _ := h3.readyz(); return code == http.StatusOK })
	if got := h3.search(""); !slices.Equal(got, sent) {
		t.Errorf("hub 3 finds %v, the others %v", got, sent)
	}
	// Hub 3 follows what the others decide next.
	x := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %s %v", n.Type, n.Reasons.Codes())
	}
	for _, h := range []*running{h1, h2, h3} {
		eventually(t, "the next document on every hub", func() bool { ids := h.search(""); return len(ids) > 0 && ids[0] == x })
	}
	if id, err := os.ReadFile(filepath.Join(h3.Info().Data, "hub.id")); err != nil || len(strings.TrimSpace(string(id))) == 0 {
		t.Errorf("hub.id: %q %v", id, err)
	}
	// How long after its publication each hub applied an event (a
	// measurement, logged; the metric must be there).
	for i, h := range []*running{h1, h2, h3} {
		mfs, err := h.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			switch mf.GetName() {
			case "edx_hub_index_apply_delay_seconds":
				hist := mf.GetMetric()[0].GetHistogram()
				found = hist.GetSampleCount() > 0
				var within []string
				for _, b := range hist.GetBucket() {
					within = append(within, fmt.Sprintf("≤%gs:%d", b.GetUpperBound(), b.GetCumulativeCount()))
				}
				t.Logf("hub %d applied %d events, %.1f ms after publication on average; cumulative: %s", i+1, hist.GetSampleCount(),
					1000*hist.GetSampleSum()/max(float64(hist.GetSampleCount()), 1), strings.Join(within, " "))
			case "edx_hub_index_lag_seconds":
				if v := mf.GetMetric()[0].GetGauge().GetValue(); v > 5 {
					t.Logf("hub %d: index lag %gs", i+1, v)
				}
			}
		}
		if !found {
			t.Errorf("hub %d: no edx_hub_index_apply_delay_seconds", i+1)
		}
	}
}
