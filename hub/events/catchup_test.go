package events

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
)

// TestCatchUpLarge measures how long a new hub takes to catch up with an
// archive of EDX_CATCHUP_DOCS documents (e.g. 100000): real containers
// signed by a unit, real receipts signed by the hub, one status each,
// archived under the projection's layout in the S3 test gateway. It then
// starts a follower on an empty index and reports the time until the index
// is complete and the rate. It is a measurement, run on request:
//
//	EDX_CATCHUP_DOCS=100000 go test -run TestCatchUpLarge -v -timeout 2h ./hub/events
func TestCatchUpLarge(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EDX_CATCHUP_DOCS"))
	if n <= 0 {
		t.Skip("a measurement: set EDX_CATCHUP_DOCS=100000 to run it")
	}
	f := newFx(t)
	ctx := t.Context()
	start := time.Now()
	var made atomic.Int64
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				if err := f.archiveDoc(ctx, i); err != nil {
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
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("archive of %d documents with a receipt and a status each built in %s", n, time.Since(start).Round(time.Second))

	ix := f.index()
	reg := prometheus.NewRegistry()
	f.log, f.wait = slog.New(slog.NewTextHandler(os.Stderr, nil)), 2*time.Hour
	began := time.Now()
	f.follow(ix, "new-hub", reg)
	took := time.Since(began)
	page, err := ix.Search(ctx, index.Query{Limit: 1})
	if err != nil || page.Total != n {
		t.Fatalf("the caught-up index holds %d documents (%v), want %d", page.Total, err, n)
	}
	page, err = ix.Search(ctx, index.Query{Status: document.StatusDelivered, Limit: 1})
	if err != nil || page.Total != n {
		t.Fatalf("%d documents delivered (%v), want %d", page.Total, err, n)
	}
	t.Logf("CATCH-UP: %d documents (%d archived objects) in %s: %.0f documents/s (GOMAXPROCS %d)",
		n, 3*n, took.Round(time.Millisecond), float64(n)/took.Seconds(), runtime.GOMAXPROCS(0))
}

// archiveDoc archives document i: its container, receipt and a status.
func (f *fx) archiveDoc(ctx context.Context, i int) error {
	d := document.Template(time.Now())
	d.From, d.To = uA, []document.UnitID{uB}
	d.Number = strconv.Itoa(i + 1)
	d.Subject = fmt.Sprintf("Về việc triển khai kế hoạch chuyển đổi số, văn bản số %d", i+1)
	meta, err := d.Marshal()
	if err != nil {
		return err
	}
	data, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: []byte(fmt.Sprintf("%%PDF-1.7 văn bản %d", i))}}, f.unit)
	if err != nil {
		return err
	}
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: f.trust})
	if c == nil || !rep.Valid {
		return fmt.Errorf("container %d: %v", i, rep.Reasons)
	}
	key := projection.ContainerKey(d.ID)
	if _, err := f.arch.Put(ctx, key, data, container.Mimetype, nil); err != nil {
		return err
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	rc := &container.Receipt{DocumentID: d.ID, From: d.From, To: d.To, ContainerSHA256: rep.ContainerSHA256,
		ContainerSize: int64(len(data)), ArchiveKey: key, AcceptedAt: at}
	rb, err := container.SignReceipt(rc, f.hub)
	if err != nil {
		return err
	}
	if _, err := f.arch.Put(ctx, projection.ReceiptKey(d.ID), rb, "application/pkcs7-mime", nil); err != nil {
		return err
	}
	st := index.StatusEntry{Status: document.Status{DocumentID: d.ID, Unit: uB, Code: document.StatusDelivered, Time: at.Add(time.Second)},
		ReceivedAt: at.Add(time.Second)}
	b, err := projection.EncodeStatus(st)
	if err != nil {
		return err
	}
	_, err = f.arch.Put(ctx, projection.StatusKey(&st.Status), b, "application/json", nil)
	return err
}
