package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/service/servicetest"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// BenchmarkSearchAPI measures issue #5's query — keywords + a unit + a date
// range of a week to a year — and relevance-sorted and bare keywords, through
// the whole HTTP API: token lookup, access rules, index, JSON. Records staff
// search their own unit (the API forces it); an archivist names the unit or
// searches everything.
//
// The index is EDX_INDEX_BENCH_DB when set (for instance the 10,000,000
// documents that hub/index's BenchmarkSearch builds and keeps with
// -index.db), else a small synthetic one of EDX_API_BENCH_DOCS documents
// (default 20,000), so that CI stays quick. At scale, run a fixed number of
// queries so that p99 means something, for instance
//
//	EDX_INDEX_BENCH_DB=/tmp/edx-10m.db go test ./hub/api -run '^$' -bench SearchAPI -benchtime 500x
func BenchmarkSearchAPI(b *testing.B) {
	ctx := b.Context()
	log := slog.New(slog.DiscardHandler)
	path := os.Getenv("EDX_INDEX_BENCH_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "index.db")
	}
	ix, err := index.Open(ctx, index.Config{Path: path}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	if os.Getenv("EDX_INDEX_BENCH_DB") == "" {
		n := 20_000
		if v, err := strconv.Atoi(os.Getenv("EDX_API_BENCH_DOCS")); err == nil && v > 0 {
			n = v
		}
		loadSynthetic(b, ix, n)
	}
	all, err := ix.Search(ctx, index.Query{Limit: 1})
	if err != nil {
		b.Fatal(err)
	}
	first, _ := ix.Search(ctx, index.Query{Limit: 1, Sort: index.SortAcceptedAsc})
	lo, hi := first.Items[0].AcceptedAt, all.Items[0].AcceptedAt
	// Units as traffic has them: the senders of a sample of documents.
	sample, _ := ix.Search(ctx, index.Query{Limit: 500, Since: lo.Add(hi.Sub(lo) / 2)})
	var units []document.UnitID
	for _, s := range sample.Items {
		if !slices.Contains(units, s.From) {
			units = append(units, s.From)
		}
		if len(units) == 40 {
			break
		}
	}
	js := broker.ForTest(b).HubJetStream(b)
	st, err := auth.Open(ctx, auth.Config{Path: filepath.Join(b.TempDir(), "users.db"), PasswordHash: servicetest.FastHash}, js, log)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	// The service's other stores, empty: the benchmark searches.
	endpoint, ak, sk := s3embed.ForTest(b)
	arch, err := archive.New(ctx, archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: fmt.Sprintf("apibench-%d", os.Getpid())}, log)
	if err != nil {
		b.Fatal(err)
	}
	reg, err := registry.Open(ctx, js, broker.BucketOptions{}, arch, log)
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	ca, err := pki.InitCA(b.TempDir(), "")
	if err != nil {
		b.Fatal(err)
	}
	trust, err := pki.LoadTrust(ca.RootsPath())
	if err != nil {
		b.Fatal(err)
	}
	svc, err := service.New(service.Deps{Index: ix, Archive: arch, Registry: reg, Accounts: st, Trust: trust, CursorKey: st.CursorKey(), Log: log})
	if err != nil {
		b.Fatal(err)
	}
	token := func(name string, role auth.Role, unit document.UnitID) string {
		if _, err := st.AddUser(ctx, auth.NewUser{Name: name, Role: role, Unit: unit, Password: servicetest.Password}); err != nil {
			b.Fatal(err)
		}
		sec, _, err := st.NewToken(ctx, name, "bench", 0)
		if err != nil {
			b.Fatal(err)
		}
		return sec
	}
	archivist := token("luu-tru", auth.RoleArchivist, "")
	staff := map[document.UnitID]string{}
	for i, u := range units {
		staff[u] = token(fmt.Sprintf("van-thu-%d", i), auth.RoleStaff, u)
	}
	srv := httptest.NewServer(api.Handler(api.Deps{Service: svc, Auth: st, Log: log}))
	defer srv.Close()
	// The query mix of hub/index's BenchmarkSearch: frequent, middling and
	// rare words, 1–3 of them.
	words := []string{"ke hoach", "quyet dinh", "bao cao", "huong dan", "trien khai", "cong tac", "ve viec", "đất đai", "kế hoạch",
		"dat dai", "phong chong", "chuyen doi so", "ngan sach", "xay dung", "cai cach hanh chinh", "giai phong mat bang",
		"tuyen sinh", "moi truong", "thu hoi dat", "nong thon moi", "phe duyet", "kiem tra", "quyết định phê duyệt", "chuyen doi s",
		"can gio", "dak lak", "cu chi", "thu duc", "phuoc", "tet nguyen dan", "phu luc chung cu", "chat thai ran", "Huỳnh Ngọc Ánh"}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	for _, bc := range []struct {
		name string
		// staff: a records officer of the unit (the API scopes the search to
		// it); otherwise the archivist, naming the unit when unit is set.
		staff, unit, rng bool
		sort             string
	}{
		{"keyword+unit+range/staff", true, true, true, ""},
		{"keyword+unit+range/archivist", false, true, true, ""},
		{"keyword+unit+range/relevance/staff", true, true, true, index.SortRelevance},
		{"keyword+range/archivist", false, false, true, ""},
		{"keyword+range/relevance/archivist", false, false, true, index.SortRelevance},
		{"keyword/archivist", false, false, false, ""},
		{"keyword/relevance/archivist", false, false, false, index.SortRelevance},
		{"keyword/relevance/staff", true, true, false, index.SortRelevance},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(2, 3))
			var lat, cpus []time.Duration
			var cpu time.Duration
			hits := 0
			for b.Loop() {
				u := units[r.IntN(len(units))]
				// A week, a month, a quarter, a year, or any length between.
				days := []int{7, 30, 91, 365, 7 + r.IntN(359)}[r.IntN(5)]
				span := hi.Sub(lo) - time.Duration(days)*24*time.Hour
				since := lo
				if span > 0 {
					since = lo.Add(time.Duration(r.Int64N(int64(span))))
				}
				q := url.Values{"q": {words[r.IntN(len(words))]}}
				if bc.rng {
					q.Set("since", since.Format(time.RFC3339))
					q.Set("until", since.AddDate(0, 0, days).Format(time.RFC3339))
				}
				if bc.sort != "" {
					q.Set("sort", bc.sort)
				}
				tok := staff[u]
				if !bc.staff {
					if bc.unit {
						q.Set("unit", string(u))
					}
					tok = archivist
				}
				req, _ := http.NewRequest("GET", srv.URL+"/api/v1/documents?"+q.Encode(), nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				start, c0 := time.Now(), cpuTime()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(start))
				cpus = append(cpus, cpuTime()-c0)
				cpu += cpus[len(cpus)-1]
				if resp.StatusCode != 200 {
					b.Fatalf("%d %s", resp.StatusCode, body)
				}
				var p index.Page
				if err := json.Unmarshal(body, &p); err != nil {
					b.Fatal(err)
				}
				hits += p.Total
			}
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / float64(time.Millisecond)
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
			b.ReportMetric(float64(hits)/float64(len(lat)), "hits/op")
			// Client and server alike: the process's CPU per query.
			b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(len(lat)), "cpu-ms/op")
			// With a core to itself, a query's latency would be about its
			// CPU time: the 99th percentile of that, beside the latencies
			// measured on a shared machine.
			slices.Sort(cpus)
			b.ReportMetric(float64(cpus[len(cpus)*99/100])/float64(time.Millisecond), "cpu-p99-ms")
			b.ReportMetric(loadAvg(), "load1")
		})
	}
}

// loadSynthetic indexes n documents among 300 units over a year: enough
// for the benchmark to run in CI; the real scale comes from hub/index's
// generator through EDX_INDEX_BENCH_DB.
func loadSynthetic(b *testing.B, ix *index.Index, n int) {
	r := rand.New(rand.NewPCG(1, 1))
	units := make([]document.UnitID, 300)
	for i := range units {
		units[i] = document.UnitID(fmt.Sprintf("%03d.%02d.00.H29", i/100, i%100))
	}
	unit := func() document.UnitID { return units[min(int(r.ExpFloat64()*40), len(units)-1)] }
	open := []string{"Quyết định về việc", "Kế hoạch", "Công văn về việc", "Báo cáo", "Thông báo"}
	verb := []string{"phê duyệt", "triển khai", "kiểm tra", "hướng dẫn", "xây dựng", "điều chỉnh"}
	obj := []string{"quy hoạch sử dụng đất đai", "ngân sách năm", "chuyển đổi số", "cải cách hành chính", "giải phóng mặt bằng", "tuyển sinh", "bảo vệ môi trường"}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recs := make([]index.Record, 0, 1000)
	for i := range n {
		acc := start.Add(time.Duration(i) * (365 * 24 * time.Hour / time.Duration(n)))
		from := unit()
		var to []document.UnitID
		for len(to) < 1+r.IntN(3) {
			if u := unit(); u != from && !slices.Contains(to, u) {
				to = append(to, u)
			}
		}
		d := document.Document{ID: document.NewID(acc), From: from, To: to, Number: strconv.Itoa(i), Notation: "QĐ-UBND",
			PromulgatedAt: acc.Format(time.DateOnly), Type: "QĐ", Subject: open[r.IntN(len(open))] + " " + verb[r.IntN(len(verb))] + " " + obj[r.IntN(len(obj))],
			Signer: document.Signer{Position: "Chủ tịch", FullName: "Nguyễn Văn An"}}
		recs = append(recs, index.Record{Doc: d, AcceptedAt: acc, ArchiveKey: "k", ReceiptKey: "r", ContainerSHA256: "00"})
		if len(recs) == cap(recs) || i == n-1 {
			if err := ix.PutDocuments(b.Context(), recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// loadAvg is the machine's load average over the last minute: beside
// latencies measured on a shared machine, how busy it was.
func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
