package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// TestClusterCatchUp measures how long a new hub takes to join a populated
// cluster: the README's deployment (three NATS servers, the S3 gateway, two
// edx-hub processes taking traffic) whose archive holds EDX_CATCHUP_DOCS
// documents (e.g. 100000), and a third edx-hub started from an empty data
// directory, which builds its index from the archive while the others go
// on accepting documents. It is a measurement, run on request:
//
//	EDX_CATCHUP_DOCS=100000 go test ./e2e/ -run TestClusterCatchUp -v -timeout 3h
//
// 200 documents go through the pipeline before (so that the decision
// events, the hubs' indexes and the archive all hold them); the bulk is
// archived as the pipeline archives it, to save the hours the pipeline
// would take here: each a container signed by a unit registered through
// hub 1 (its key and the certificate the issuing CA gave it), the hub's
// receipt signed with the hubs' key, and a status 01 of the recipient,
// under the projection's layout. While hub 3 catches up, 200 more go
// through the cluster. The figure is the time from hub 3's start until it
// is ready and its search finds every document and every status, and its
// own log of the rebuild.
func TestClusterCatchUp(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EDX_CATCHUP_DOCS"))
	if n <= 0 {
		t.Skip("a measurement: set EDX_CATCHUP_DOCS=100000 to run it")
	}
	c := newCluster(t)
	h1 := c.startHub("hub-1")
	c.startHub("hub-2")
	const ua, ub = document.UnitID("000.01.00.H29"), document.UnitID("000.02.00.H29")
	c.register(h1, ua)
	c.register(h1, ub)
	a := connectAs(t, c.work, c.urls, ua)
	b := connectAs(t, c.work, c.urls, ub)
	before := sendStream(t, a, b, 200)
	before.check()

	ctx := t.Context()
	arch, err := archive.New(ctx, c.s3, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hubSigner, err := pki.LoadSigner(filepath.Join(c.work, "pki", "hub.key.pem"), filepath.Join(c.work, "pki", "hub.cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var made atomic.Int64
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				if err := archiveDoc(ctx, arch, a.signer, hubSigner, ub, i); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				if k := made.Add(1); k%10000 == 0 {
					t.Logf("archived %d documents (%.0f/s)", k, float64(k)/time.Since(start).Seconds())
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatal(err)
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("%d documents with a receipt and a status each archived in %s", n, time.Since(start).Round(time.Second))

	// Hub 3 joins; the cluster goes on meanwhile.
	load, _ := os.ReadFile("/proc/loadavg")
	began := time.Now()
	h3 := c.launchHub("hub-3")
	during := sendStream(t, a, b, 200)
	// Caught up: hub 3 is ready (its index complete, following the
	// events), its search finds every document, and the recipient's status
	// on each archived one.
	want := len(before.accepted) + n + len(during.sent)
	var total, delivered int
	ready := false
	for deadline := time.Now().Add(3 * time.Hour); time.Now().Before(deadline); time.Sleep(time.Second) {
		tok, err := os.ReadFile(filepath.Join(h3.data, "admin.token"))
		if err != nil {
			continue
		}
		token := strings.TrimSpace(string(tok))
		var page struct {
			Total int `json:"total"`
		}
		if code, _ := hubCall(h3, token, "GET", "/api/v1/documents?limit=1", nil, &page); code == 200 {
			total = page.Total
		}
		if code, _ := hubCall(h3, token, "GET", "/api/v1/documents?status=01&limit=1", nil, &page); code == 200 {
			delivered = page.Total
		}
		resp, err := http.Get(h3.info.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			ready = resp.StatusCode == 200
		}
		if ready && total == want && delivered == n {
			break
		}
	}
	took := time.Since(began)
	if !ready || total != want || delivered != n {
		t.Fatalf("hub 3 (ready %v) finds %d of %d documents, %d of %d with status 01", ready, total, want, delivered, n)
	}
	during.check()
	log, _ := os.ReadFile(filepath.Join(h3.data, "hub.log"))
	rebuilt := regexp.MustCompile(`msg="events: index rebuilt from the archive[^\n]*`).Find(log)
	loadAfter, _ := os.ReadFile("/proc/loadavg")
	t.Logf("CATCH-UP: a new hub found all %d documents %s after its start (%.0f documents/s), while the cluster accepted %d more; "+
		"load average before %s, after %s; its log: %s", want, took.Round(time.Second), float64(want)/took.Seconds(), len(during.accepted),
		string(load[:len(load)-1]), string(loadAfter[:len(loadAfter)-1]), rebuilt)
}

// launchHub starts an edx-hub on the cluster with its own data directory,
// and waits only until it has started (a hub catching up is not ready).
func (c *cluster) launchHub(name string) *hubProc {
	c.t.Helper()
	data := filepath.Join(c.work, name)
	copyTree(c.t, c.keys, filepath.Join(data, "nats", "keys"))
	h := launchHubProc(c.t, data, c.env, "--config", c.conf, "--data", data, "--http", "127.0.0.1:0")
	h.await(false)
	c.hubs = append(c.hubs, h)
	return h
}

// archiveDoc archives document i from the signer's unit to the recipient as
// the pipeline does: its container, the hub's receipt and the recipient's
// status 01.
func archiveDoc(ctx context.Context, arch *archive.Store, unit, hub *pki.Signer, to document.UnitID, i int) error {
	from, err := pki.UnitOf(unit.Cert())
	if err != nil {
		return err
	}
	d := document.Template(time.Now())
	d.From, d.To = from, []document.UnitID{to}
	d.Number = strconv.Itoa(i + 1)
	d.Subject = fmt.Sprintf("Về việc triển khai kế hoạch chuyển đổi số, văn bản số %d", i+1)
	meta, err := d.Marshal()
	if err != nil {
		return err
	}
	data, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: fmt.Appendf(nil, "%%PDF-1.7 văn bản %d", i)}}, unit)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	key := projection.ContainerKey(d.ID)
	if _, err := arch.Put(ctx, key, data, container.Mimetype, nil); err != nil {
		return err
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	rc := &container.Receipt{DocumentID: d.ID, From: d.From, To: d.To, ContainerSHA256: hex.EncodeToString(sum[:]),
		ContainerSize: int64(len(data)), ArchiveKey: key, AcceptedAt: at}
	rb, err := container.SignReceipt(rc, hub)
	if err != nil {
		return err
	}
	if _, err := arch.Put(ctx, projection.ReceiptKey(d.ID), rb, "application/pkcs7-mime", nil); err != nil {
		return err
	}
	st := index.StatusEntry{Status: document.Status{DocumentID: d.ID, Unit: to, Code: document.StatusDelivered, Time: at.Add(time.Second)},
		ReceivedAt: at.Add(time.Second)}
	b, err := projection.EncodeStatus(st, nil)
	if err != nil {
		return err
	}
	_, err = arch.Put(ctx, projection.StatusKey(&st.Status), b, "application/json", nil)
	return err
}
