package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/hub"
	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// runningHub starts a hub in this process (embedded NATS, the test S3
// gateway) and serves it until the test ends.
func runningHub(t *testing.T) *hub.Hub {
	t.Helper()
	return runningHubWith(t, func(*hub.Config) {})
}

// runningHubWith is runningHub with its configuration changed by set.
func runningHubWith(t *testing.T, set func(*hub.Config)) *hub.Hub {
	t.Helper()
	endpoint, ak, sk := s3embed.ForTest(t)
	cfg := hub.Config{Data: t.TempDir()}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.Embedded.Listen = "127.0.0.1:-1"
	cfg.NATS.Embedded.MaxStore = 16 << 30
	cfg.S3.Archive = archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: fmt.Sprintf("bench-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)}
	set(&cfg)
	h, err := hub.New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// TestRemoteHub: edx bench --hub drives a hub it did not start, with units
// it registers through the hub's API, and reports the same table without
// the hub's resources or the ceilings.
func TestRemoteHub(t *testing.T) {
	h := runningHub(t)
	res, err := Run(t.Context(), Options{HubURL: h.Info().HTTP, Token: h.AdminToken(), Units: 3, Docs: 30, Size: 4 << 10, Concurrency: 8, Ceilings: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted.N != 30 || res.Lost != 0 || len(res.Missing) != 0 || res.Doubled != 0 || res.Rejected != 0 || res.Deliveries == 0 || res.HubMeasured || res.Ceilings != nil || res.Hub != h.Info().HTTP {
		t.Fatalf("%+v", res)
	}
}

// TestRemoteHubByCursor: units of a hub that keeps no consumer per unit
// read by cursor (Options.UnitConsumers), every delivery and every status
// notice once, with statuses signed.
func TestRemoteHubByCursor(t *testing.T) {
	h := runningHubWith(t, func(c *hub.Config) { c.NATS.Streams.UnitConsumers = "cursor" })
	res, err := Run(t.Context(), Options{HubURL: h.Info().HTTP, Token: h.AdminToken(), Units: 3, Docs: 40, Size: 4 << 10, Concurrency: 8,
		Statuses: "signed", UnitConsumers: "cursor"})
	if err != nil {
		t.Fatal(err)
	}
	if res.UnitReading != "cursor" || res.Accepted.N != 40 || res.Lost != 0 || res.Doubled != 0 || res.Deliveries == 0 ||
		res.StatusNotices != res.Deliveries || res.StatusesMissing != 0 || res.Redelivered != 0 {
		t.Fatalf("%+v", res)
	}
}

// TestStatuses: with Options.Statuses, every recipient reports 01 on each
// delivery, as its agent would, and the run waits until every sender is
// told: signed, each notice carries the recipient's signature as the hub
// verified and archived it; unsigned, none does.
func TestStatuses(t *testing.T) {
	h := runningHub(t)
	for _, mode := range []string{"signed", "unsigned"} {
		res, err := Run(t.Context(), Options{HubURL: h.Info().HTTP, Token: h.AdminToken(), Units: 3, Docs: 20, Size: 4 << 10, Concurrency: 8, Statuses: mode})
		if err != nil {
			t.Fatal(err)
		}
		signed := res.StatusNotices
		if mode == "unsigned" {
			signed = 0
		}
		if res.Lost != 0 || res.Deliveries == 0 || res.StatusNotices != res.Deliveries || res.StatusesMissing != 0 ||
			res.StatusesSigned != signed || res.Status.N != res.Deliveries || res.Status.P50 < res.Delivered.P50 {
			t.Fatalf("%s: %d deliveries, %d statuses told (%d signed), %d missing; status p50 %s, delivered p50 %s",
				mode, res.Deliveries, res.StatusNotices, res.StatusesSigned, res.StatusesMissing, res.Status.P50, res.Delivered.P50)
		}
	}
}

// TestRemoteHubRejections: with units registered before (a units
// directory, as edx unit add writes it), one of which signs with a
// certificate the hub does not trust, the bench ends once every document
// is decided: the rejected ones count as rejected, nothing is waited for
// (before, each rejection held a slot of the concurrency for good, and the
// run hung once they were all taken).
func TestRemoteHubRejections(t *testing.T) {
	h := runningHub(t)
	dir := t.TempDir()
	ids := []document.UnitID{"001.00.00.B01", "002.00.00.B01", "003.00.00.B01"}
	for _, id := range ids {
		b := registerUnit(t, h, id)
		ud := filepath.Join(dir, string(id))
		os.MkdirAll(ud, 0o700)
		os.WriteFile(filepath.Join(ud, "nats.creds"), []byte(b.Creds), 0o600)
		os.WriteFile(filepath.Join(ud, "key.pem"), []byte(b.KeyPEM), 0o600)
		os.WriteFile(filepath.Join(ud, "cert.pem"), []byte(b.CertPEM), 0o600)
		os.WriteFile(filepath.Join(ud, "agent.yaml"), []byte("nats:\n  url: "+b.NATSURL+"\n"), 0o600)
	}
	// The third unit signs with a key of a CA the hub does not trust.
	other, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	kp, cp, err := other.IssueUnit(ids[2], "Đơn vị lạ", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{kp: "key.pem", cp: "cert.pem"} {
		b, _ := os.ReadFile(from)
		os.WriteFile(filepath.Join(dir, string(ids[2]), to), b, 0o600)
	}
	const n = 60
	res, err := Run(t.Context(), Options{HubURL: h.Info().HTTP, UnitsDir: dir, Docs: n, Size: 4 << 10, Concurrency: 4, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Up to 3 recipients of 3 units: two at most, and some documents have two.
	if res.Rejected == 0 || res.Accepted.N+res.Rejected != n || res.Undecided != 0 || res.Undelivered != 0 || res.Doubled != 0 || res.Stalled || res.Units != 3 ||
		res.Deliveries <= res.Accepted.N {
		t.Fatalf("%d accepted, %+v", res.Accepted.N, res)
	}
}
