package index

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Benchmark size: -index.docs N (or EDX_INDEX_BENCH_DOCS); -index.db PATH (or
// EDX_INDEX_BENCH_DB) keeps the built index there and reuses it next time
// (an index of another size is emptied and rebuilt). bulkBuild makes it: on
// this 2-core machine about 5,000 documents a second, 10,000,000 in about 40
// minutes and 40 GB (keep it out of the repository: /tmp). Latencies are
// per query; run a fixed number of queries so that p99 means something:
//
//	go test ./hub/index -run '^$' -bench 'BenchmarkSearch$' -benchtime 500x \
//		-index.docs 10000000 -index.db /tmp/edx-10m.db
//
// hub/api's BenchmarkSearchAPI runs the same mix through the HTTP API on the
// kept index (EDX_INDEX_BENCH_DB), and BenchmarkPostgres on PostgreSQL.
var (
	benchDocs = flag.Int("index.docs", envInt("EDX_INDEX_BENCH_DOCS", 100_000), "documents in the search benchmark's index")
	benchDB   = flag.String("index.db", os.Getenv("EDX_INDEX_BENCH_DB"), "path of the search benchmark's index, kept and reused (default: a temporary file)")
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

var benchTmp string

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTmp != "" {
		os.RemoveAll(benchTmp)
	}
	os.Exit(code)
}

// gen makes realistic documents: ~1,500 units with skewed traffic (a few
// busy senders and recipients, a long tail), mostly 1–4 recipients with
// occasional broadcasts, Vietnamese subjects from administrative phrases,
// three years of acceptance times.
type gen struct {
	rng   *rand.Rand
	units []document.UnitID
	start time.Time
	step  time.Duration
}

const benchSpan = 3 * 365 * 24 * time.Hour

func newGen(seed uint64, n int) *gen {
	g := &gen{rng: rand.New(rand.NewPCG(seed, 7)), start: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	g.step = benchSpan / time.Duration(max(n, 1))
	for i := range 1500 {
		letter := "H"
		if i%7 == 0 {
			letter = "G"
		}
		g.units = append(g.units, document.UnitID(fmt.Sprintf("%03d.%02d.%02d.%s%02d", i/100, i%100, i%13, letter, 10+i%89)))
	}
	return g
}

// unit picks a unit, skewed: unit i has weight about 1/(i+1).
func (g *gen) unit() document.UnitID {
	i := int(math.Exp(g.rng.Float64()*math.Log(float64(len(g.units)+1)))) - 1
	return g.units[min(i, len(g.units)-1)]
}

var (
	vOpen = []string{"Về việc", "V/v", "Quyết định về việc", "Kế hoạch", "Thông báo", "Báo cáo", "Hướng dẫn", "Tờ trình về việc", "Chỉ thị về việc", "Công văn về việc"}
	vVerb = []string{"phê duyệt", "triển khai", "tăng cường", "hướng dẫn thực hiện", "điều chỉnh", "ban hành", "tổ chức", "kiểm tra", "đẩy mạnh", "sơ kết", "tổng kết", "rà soát", "giao chỉ tiêu", "bổ sung kinh phí cho", "thành lập Ban chỉ đạo"}
	vObj  = []string{
		"kế hoạch sử dụng đất đai", "công tác phòng chống dịch bệnh", "quy hoạch xây dựng đô thị", "dự toán ngân sách nhà nước",
		"chương trình chuyển đổi số", "cải cách hành chính", "công tác phòng cháy chữa cháy", "giải phóng mặt bằng dự án",
		"bồi thường hỗ trợ tái định cư", "công tác tuyển sinh lớp 10", "an toàn vệ sinh thực phẩm", "bảo vệ môi trường",
		"phát triển nhà ở xã hội", "quản lý trật tự xây dựng", "công tác thi đua khen thưởng", "đánh giá cán bộ công chức",
		"kiểm soát thủ tục hành chính", "chống ngập nước", "đầu tư công trung hạn", "thu hồi đất", "cấp giấy chứng nhận quyền sử dụng đất",
		"phòng chống thiên tai", "tiêm chủng mở rộng", "hỗ trợ doanh nghiệp nhỏ và vừa", "giảm nghèo bền vững", "xây dựng nông thôn mới",
		"quản lý chất thải rắn", "cải tạo chung cư cũ", "chỉnh trang đô thị", "an toàn giao thông", "Tết Nguyên đán",
	}
	vPlace = []string{"trên địa bàn Thành phố", "tại Quận 1", "tại Quận 3", "tại thành phố Thủ Đức", "tại huyện Củ Chi", "tại huyện Cần Giờ",
		"tại huyện Bình Chánh", "tại Quận Gò Vấp", "tại tỉnh Đắk Lắk", "tại các phường, xã", "", "", ""}
	vFamily = []string{"Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý"}
	vMiddle = []string{"Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quốc", "Thành", "Hoàng"}
	vGiven  = []string{"An", "Bình", "Cường", "Dũng", "Đông", "Giang", "Hà", "Hải", "Hạnh", "Hùng", "Khoa", "Lan", "Long", "Mai", "Nam", "Phong", "Phúc", "Quân", "Sơn", "Tâm", "Thắng", "Trung", "Tuấn", "Vy", "Yến", "Ánh", "Phước"}
	vPos    = []string{"Chủ tịch", "Phó Chủ tịch", "Giám đốc", "Phó Giám đốc", "Chánh Văn phòng", "Trưởng phòng"}
	vOrg    = []string{"Ủy ban nhân dân", "Sở Tài nguyên và Môi trường", "Sở Xây dựng", "Sở Tài chính", "Sở Giáo dục và Đào tạo", "Sở Y tế", "Văn phòng", "Sở Nội vụ", "Sở Thông tin và Truyền thông"}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func (g *gen) record(i int) Record {
	r := g.rng
	acc := g.start.Add(time.Duration(i)*g.step + time.Duration(r.Int64N(int64(g.step))))
	from := g.unit()
	n := 1 + r.IntN(4)
	switch x := r.IntN(100); {
	case x == 0:
		n = 50 + r.IntN(150)
	case x < 15:
		n = 5 + r.IntN(16)
	}
	to := make([]document.UnitID, 0, n)
	for len(to) < n {
		u := g.unit()
		if n > 20 {
			u = pick(r, g.units)
		}
		if u != from && !slices.Contains(to, u) {
			to = append(to, u)
		}
	}
	dt := pick(r, document.DocTypes[:18])
	subject := strings.TrimSpace(fmt.Sprintf("%s %s %s %s năm %d", pick(r, vOpen), pick(r, vVerb), pick(r, vObj), pick(r, vPlace), acc.Year()))
	d := document.Document{
		ID: document.NewID(acc), From: from, FromName: pick(r, vOrg) + " " + string(from), To: to,
		Number: strconv.Itoa(1 + r.IntN(9999)), Notation: dt.Code + "-UBND", PromulgatedAt: acc.AddDate(0, 0, -r.IntN(5)).Format("2006-01-02"),
		PromulgatedPlace: "Thành phố Hồ Chí Minh", Type: dt.Code, TypeName: dt.Name, Subject: subject,
		Signer:  document.Signer{Position: pick(r, vPos), FullName: pick(r, vFamily) + " " + pick(r, vMiddle) + " " + pick(r, vGiven)},
		Urgency: document.Urgency(r.IntN(4) / 3), Places: []string{"Như trên", "Lưu: VT"},
	}
	if r.IntN(10) < 4 {
		d.DueDate = acc.AddDate(0, 0, 7+r.IntN(24)).Format("2006-01-02")
	}
	files := []File{{Name: fmt.Sprintf("%s-%s.pdf", dt.Code, d.Number), MediaType: "application/pdf", Size: 100_000 + r.Int64N(900_000), SHA256: fmt.Sprintf("%064x", r.Uint64())}}
	if r.IntN(3) == 0 {
		files = append(files, File{Name: "Phụ lục " + pick(r, vObj) + ".docx", MediaType: "application/vnd.openxmlformats-officedocument.wordprocessingml.document", Size: r.Int64N(200_000), SHA256: fmt.Sprintf("%064x", r.Uint64())})
	}
	key := acc.Format("2006/01/02/") + string(d.ID)
	return Record{
		Doc: d, Files: files, ContainerSHA256: fmt.Sprintf("%064x", r.Uint64()), Size: 200_000 + r.Int64N(1_000_000),
		Signer:     SignerInfo{SubjectCN: d.FromName, Serial: fmt.Sprintf("%x", r.Uint64()), Unit: from, SigningTime: acc.Add(-time.Second)},
		ArchiveKey: key + "/container.asice", ReceiptKey: key + "/receipt.p7s", AcceptedAt: acc,
	}
}

func load(tb testing.TB, ix *Index, g *gen, from, to, batch int, statuses bool) {
	recs := make([]Record, 0, batch)
	for i := from; i < to; i++ {
		recs = append(recs, g.record(i))
		if len(recs) == batch || i == to-1 {
			if err := ix.PutDocuments(tb.Context(), recs); err != nil {
				tb.Fatal(err)
			}
			if statuses {
				if _, err := ix.AddStatuses(tb.Context(), g.statuses(recs)); err != nil {
					tb.Fatal(err)
				}
			}
			recs = recs[:0]
		}
	}
}

// statuses returns the progress reports of up to two recipients of each
// record: most deliver and register, about half finish.
func (g *gen) statuses(recs []Record) []document.Status {
	r := g.rng
	var out []document.Status
	for _, rec := range recs {
		for _, u := range rec.Doc.To[:min(2, len(rec.Doc.To))] {
			at := rec.AcceptedAt
			for _, c := range []document.StatusCode{"01", "03", "05", "06"} {
				if r.IntN(10) < 2 {
					break
				}
				at = at.Add(time.Duration(1+r.IntN(48)) * time.Hour)
				out = append(out, document.Status{DocumentID: rec.Doc.ID, Unit: u, Code: c, Time: at})
			}
		}
	}
	return out
}

var (
	benchOnce sync.Once
	benchIx   *Index
	benchErr  error
)

// benchIndex opens the shared benchmark index, building it if needed.
func benchIndex(b *testing.B) *Index {
	benchOnce.Do(func() {
		path := *benchDB
		if path == "" {
			dir, err := os.MkdirTemp("", "edx-index-bench")
			if err != nil {
				benchErr = err
				return
			}
			benchTmp = dir
			path = filepath.Join(dir, "index.db")
		}
		ix, err := Open(b.Context(), Config{Path: path}, slog.New(slog.DiscardHandler))
		if err != nil {
			benchErr = err
			return
		}
		var have int
		if err := ix.r.QueryRow("SELECT count(*) FROM documents").Scan(&have); err != nil {
			benchErr = err
			return
		}
		if have != *benchDocs {
			if err := ix.Reset(b.Context()); err != nil {
				benchErr = err
				return
			}
			ix.Close()
			start := time.Now()
			last := start
			err := bulkBuild(context.Background(), path, *benchDocs, start, func(done int) {
				if time.Since(last) > time.Minute {
					last = time.Now()
					fmt.Fprintf(os.Stderr, "built %d documents in %v\n", done, time.Since(start).Round(time.Second))
				}
			})
			if err != nil {
				benchErr = err
				return
			}
			fi, _ := os.Stat(path)
			fmt.Fprintf(os.Stderr, "built and optimized %d documents in %v (%.0f docs/s), %d MB\n",
				*benchDocs, time.Since(start).Round(time.Second), float64(*benchDocs)/time.Since(start).Seconds(), fi.Size()>>20)
			if ix, err = Open(b.Context(), Config{Path: path}, slog.New(slog.DiscardHandler)); err != nil {
				benchErr = err
				return
			}
		}
		benchIx = ix
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchIx
}

// benchWords is the query mix: frequent words of the subjects (a third or
// more of all documents), middling ones (a single phrase or place), rare ones
// (a signer's given name, a district, a file-name word), 1–3 words, some
// with diacritics, some a prefix being typed.
var benchWords = []string{
	// frequent
	"ke hoach", "quyet dinh", "bao cao", "huong dan", "trien khai", "cong tac", "ve viec", "nam 2025", "đất đai", "kế hoạch",
	// middling
	"dat dai", "phong chong", "chuyen doi so", "ngan sach", "xay dung", "cai cach hanh chinh", "giai phong mat bang",
	"tai dinh cu", "tuyen sinh", "moi truong", "nha o xa hoi", "thu hoi dat", "thien tai", "nong thon moi",
	"an toan giao thong", "chung cu", "thi dua khen thuong", "dau tu cong", "phe duyet", "kiem tra", "so ket",
	"quyết định phê duyệt", "tiêm chủng", "chuyen doi s", "phong chay",
	// rare
	"can gio", "dak lak", "cu chi", "thu duc", "go vap", "phuoc", "yen", "tet nguyen dan", "phu luc chung cu",
	"chat thai ran", "doanh nghiep nho", "ban chi dao", "Huỳnh Ngọc Ánh", "vy", "kinh phi tiem chung",
}

// benchQuery returns issue #5's query: keywords + the unit whose archive is
// searched (picked as traffic falls, so busy units come up more) + a date
// range of a week to a year (a week, a month, a quarter or a year, or any
// length between).
func benchQuery(r *rand.Rand, g *gen) Query {
	days := []int{7, 30, 91, 365, 7 + r.IntN(359)}[r.IntN(5)]
	since := g.start.Add(time.Duration(r.Int64N(int64(benchSpan - time.Duration(days)*24*time.Hour))))
	return Query{Text: pick(r, benchWords), Unit: g.unit(), Since: since, Until: since.AddDate(0, 0, days)}
}

func BenchmarkSearch(b *testing.B) {
	ix := benchIndex(b)
	for _, bc := range []struct {
		name string
		mod  func(r *rand.Rand, q Query) Query
	}{
		{"keyword+unit+range", func(_ *rand.Rand, q Query) Query { return q }},
		{"keyword+unit+range/relevance", func(_ *rand.Rand, q Query) Query { q.Sort = SortRelevance; return q }},
		{"keyword+unit+range/page2", nil},
		{"keyword+unit", func(_ *rand.Rand, q Query) Query { q.Since, q.Until = time.Time{}, time.Time{}; return q }},
		{"keyword+unit/relevance", func(_ *rand.Rand, q Query) Query {
			q.Since, q.Until, q.Sort = time.Time{}, time.Time{}, SortRelevance
			return q
		}},
		{"keyword", func(_ *rand.Rand, q Query) Query { return Query{Text: q.Text} }},
		{"keyword/relevance", func(_ *rand.Rand, q Query) Query { return Query{Text: q.Text, Sort: SortRelevance} }},
		{"keyword+range", func(_ *rand.Rand, q Query) Query { q.Unit = ""; return q }},
		{"keyword+range/relevance", func(_ *rand.Rand, q Query) Query { q.Unit, q.Sort = "", SortRelevance; return q }},
		{"unit", func(_ *rand.Rand, q Query) Query { return Query{Unit: q.Unit} }},
		{"unit+status", func(_ *rand.Rand, q Query) Query { return Query{Unit: q.Unit, Status: "03"} }},
		{"keyword+unit+range+status", func(_ *rand.Rand, q Query) Query { q.Status = "06"; return q }},
		{"keyword+unit+range/promulgated", func(_ *rand.Rand, q Query) Query { q.Sort = SortPromulgatedDesc; return q }},
		{"none", func(_ *rand.Rand, q Query) Query { return Query{} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := newGen(1, *benchDocs)
			r := rand.New(rand.NewPCG(2, 3))
			var lat, cpus []time.Duration
			var cpu time.Duration
			hits := 0
			for b.Loop() {
				q := benchQuery(r, g)
				if bc.mod != nil {
					q = bc.mod(r, q)
				} else {
					// The second page: the cursor of the first is fetched outside the timing.
					b.StopTimer()
					p, err := ix.Search(b.Context(), q)
					if err != nil {
						b.Fatal(err)
					}
					q.Cursor = p.NextCursor
					b.StartTimer()
					if q.Cursor == "" {
						continue
					}
				}
				start, c0 := time.Now(), cpuTime()
				p, err := ix.Search(b.Context(), q)
				lat = append(lat, time.Since(start))
				cpus = append(cpus, cpuTime()-c0)
				cpu += cpus[len(cpus)-1]
				if err != nil {
					b.Fatal(err)
				}
				hits += p.Total
			}
			reportLatency(b, lat)
			b.ReportMetric(float64(hits)/float64(max(len(lat), 1)), "hits/op")
			b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(max(len(lat), 1)), "cpu-ms/op")
			reportCPU(b, cpus)
			b.ReportMetric(loadAvg(), "load1")
		})
	}
}

// cpuTime is the process's CPU time so far (user and system): per query,
// what a search costs whatever else the machine runs (latency on a shared
// machine also waits for a core).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the 99th percentile of the CPU time of one query: on a
// shared machine, what its latency would be with a core to itself.
func reportCPU(b *testing.B, cpus []time.Duration) {
	if len(cpus) == 0 {
		return
	}
	slices.Sort(cpus)
	b.ReportMetric(float64(cpus[min(len(cpus)*99/100, len(cpus)-1)])/float64(time.Millisecond), "cpu-p99-ms")
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

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
}

// BenchmarkPutDocuments measures bulk loading in batches of 1,000 documents
// into an index that grows across iterations.
func BenchmarkPutDocuments(b *testing.B) {
	ix, _ := openTest(b)
	g := newGen(9, 1_000_000)
	const batch = 1000
	n := 0
	for b.Loop() {
		load(b, ix, g, n, n+batch, batch, false)
		n += batch
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "docs/s")
}

// BenchmarkPutDocument measures one document per transaction, as the hub
// indexes while it runs.
func BenchmarkPutDocument(b *testing.B) {
	ix, _ := openTest(b)
	g := newGen(9, 1_000_000)
	n := 0
	for b.Loop() {
		load(b, ix, g, n, n+1, 1, false)
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "docs/s")
}

// BenchmarkUnitFilterShapes compares, on issue #5's queries, the ways to
// combine a unit filter with full-text search, counting the matches (the
// expensive part of a page):
//
//   - tags: the unit is a token in the FTS row, and FTS5 intersects its
//     doclist with the terms' and seeks to the rowid range (what Search does);
//   - fts-drives: FTS5 finds the text matches in the range, and each is
//     checked against the recipients and the sender;
//   - unit-drives: the unit's documents in the range come from the
//     recipients(unit, doc) and documents(from_unit) indexes, and each is
//     checked with MATCH on its rowid.
func BenchmarkUnitFilterShapes(b *testing.B) {
	ix := benchIndex(b)
	ctx := b.Context()
	// unit-drives needs the unit's recipients in document order.
	if _, err := ix.w.ExecContext(ctx, "CREATE INDEX IF NOT EXISTS bench_recipients_unit_doc ON recipients(unit, doc)"); err != nil {
		b.Fatal(err)
	}
	defer ix.w.ExecContext(ctx, "DROP INDEX bench_recipients_unit_doc")
	for _, shape := range []string{"tags", "fts-drives", "unit-drives"} {
		b.Run(shape, func(b *testing.B) {
			g := newGen(1, *benchDocs)
			r := rand.New(rand.NewPCG(2, 3))
			var lat []time.Duration
			for b.Loop() {
				q := benchQuery(r, g)
				p, err := compile(&q)
				if err != nil {
					b.Fatal(err)
				}
				tx, err := ix.r.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				text := *p
				text.tags = nil
				if ok, err := text.expand(ctx, tx); !ok || err != nil {
					b.Fatal(ok, err)
				}
				var sql string
				var args []any
				switch shape {
				case "tags":
					if ok, err := p.expand(ctx, tx); !ok || err != nil {
						b.Fatal(ok, err)
					}
					sql, args = p.countSQL()
				case "fts-drives":
					sql = `SELECT count(*) FROM search WHERE search MATCH ?1 AND rowid >= ?2 AND rowid < ?3 AND (
						EXISTS (SELECT 1 FROM recipients WHERE doc = search.rowid AND unit = ?4) OR
						EXISTS (SELECT 1 FROM documents WHERE seq = search.rowid AND from_unit = ?4))`
					args = []any{text.match, p.lo, p.hi, string(q.Unit)}
				case "unit-drives":
					sql = `SELECT count(*) FROM (
						SELECT doc AS seq FROM recipients INDEXED BY bench_recipients_unit_doc WHERE unit = ?4 AND doc >= ?2 AND doc < ?3
						UNION ALL
						SELECT seq FROM documents WHERE from_unit = ?4 AND seq >= ?2 AND seq < ?3) u
						WHERE EXISTS (SELECT 1 FROM search WHERE search MATCH ?1 AND rowid = u.seq)`
					args = []any{text.match, p.lo, p.hi, string(q.Unit)}
				}
				var n int
				if err := tx.QueryRowContext(ctx, sql, args...).Scan(&n); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				tx.Rollback()
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkDocumentLife measures what the hub asks of the index for each
// document it takes: the document stored, and for one recipient its 01
// (delivered) read against the document (Get, as the pipeline judges a
// status) and stored, each in a transaction of its own.
func BenchmarkDocumentLife(b *testing.B) {
	ix, _ := openTest(b)
	g := newGen(9, 1_000_000)
	ctx := b.Context()
	n := 0
	for b.Loop() {
		rec := g.record(n)
		n++
		if err := ix.PutDocument(ctx, rec); err != nil {
			b.Fatal(err)
		}
		if _, err := ix.Get(ctx, rec.Doc.ID); err != nil {
			b.Fatal(err)
		}
		st := document.Status{DocumentID: rec.Doc.ID, Unit: rec.Doc.To[0], Code: "01", Time: rec.AcceptedAt.Add(time.Second)}
		if _, err := ix.AddStatus(ctx, st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetWhileWriting: a document read (as the pipeline reads one for
// each status) while another goroutine stores documents, as on a busy hub.
func BenchmarkGetWhileWriting(b *testing.B) {
	ix, _ := openTest(b)
	g := newGen(9, 1_000_000)
	ctx := b.Context()
	var ids []document.ID
	for n := range 2000 {
		rec := g.record(n)
		if err := ix.PutDocument(ctx, rec); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, rec.Doc.ID)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	var written atomic.Int64
	go func() {
		defer close(stopped)
		for n := 2000; ; n++ {
			written.Store(int64(n - 2000))
			select {
			case <-done:
				return
			default:
			}
			if err := ix.PutDocument(ctx, g.record(n)); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	i := 0
	for b.Loop() {
		if _, err := ix.Get(ctx, ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	close(done)
	<-stopped
	b.ReportMetric(float64(written.Load())/float64(b.N), "writes/op")
}
