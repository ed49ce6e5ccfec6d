package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

func TestFold(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Quyết định", "quyet dinh"},
		{"Đất đai", "dat dai"},
		{"ĐẮK LẮK", "dak lak"},
		{"đất đai", "dat dai"},
		{"Thành phố Hồ Chí Minh", "thanh pho ho chi minh"},
		{"Ủy ban nhân dân", "uy ban nhan dan"},
		{"Nghị quyết số 12/NQ-HĐND", "nghi quyet so 12/nq-hdnd"},
		{"ƯU TIÊN, Ơ, Ă, Â, Ê, Ô", "uu tien, o, a, a, e, o"},
		{"hỏa tốc – thượng khẩn", "hoa toc – thuong khan"},
		{"QĐ-UBND", "qd-ubnd"},
		{"plain ASCII 123", "plain ascii 123"},
		// Decomposed input (NFD, as some macOS and Windows tools write) folds alike.
		{"Quye\u0302\u0301t đi\u0323nh", "quyet dinh"},
		{"", ""},
	} {
		if got := Fold(tc.in); got != tc.want {
			t.Errorf("Fold(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestFoldFast: the tables Fold uses for Latin text give, for every rune
// in them and for strings mixing them (precomposed, decomposed, ASCII, marks
// in any order, and runes outside the tables), what the definition gives.
func TestFoldFast(t *testing.T) {
	var all []rune
	for r := rune(0); r < 0x1F00; r++ {
		if r < 0x370 || r >= 0x1E00 {
			all = append(all, r)
			if got, want := Fold(string(r)), foldSlow(string(r)); got != want {
				t.Errorf("Fold(%U) = %q, want %q", r, got, want)
			}
		}
	}
	all = append(all, '中', 'ᄀ', '가', 'Ω', 'ﬁ', '\u0345', '\u1DC0', '\U0001D165')
	rng := rand.New(rand.NewPCG(5, 5))
	for range 20_000 {
		rs := make([]rune, 1+rng.IntN(12))
		for i := range rs {
			if rng.IntN(3) == 0 {
				rs[i] = rune(0x300 + rng.IntN(0x70)) // a combining mark
			} else {
				rs[i] = all[rng.IntN(len(all))]
			}
		}
		if got, want := Fold(string(rs)), foldSlow(string(rs)); got != want {
			t.Fatalf("Fold(%q) = %q, want %q", string(rs), got, want)
		}
	}
}

func TestTerms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"Quyết định", []string{"quyet", "dinh"}},
		{`"đất" AND (đai* OR NEAR(x y))`, []string{"dat", "and", "dai", "or", "near", "x", "y"}},
		{"QĐ-UBND 1234", []string{"qd", "ubnd", "1234"}},
		{`*"^:{}-+`, nil},
	} {
		if got := terms(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("terms(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSearchVietnamese(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	subjects := []string{
		"Quyết định về việc phê duyệt quy hoạch",
		"Về việc sử dụng đất đai năm 2027",
		"Kế hoạch tổ chức Tết Nguyên đán",
		"Báo cáo tình hình ĐẮK LẮK",
	}
	for i, s := range subjects {
		rec := testRecord(t0.Add(time.Duration(i)*time.Minute), hcm, dept1)
		rec.Doc.Subject = s
		rec.Doc.Signer.FullName = "Nguyễn Văn An"
		rec.Doc.FromName = "Ủy ban nhân dân Thành phố Hồ Chí Minh"
		rec.Files = []File{{Name: fmt.Sprintf("van-ban-%d.pdf", i), MediaType: "application/pdf"}}
		if i == 3 {
			rec.Files[0].Name = "Quyết định công nhận.pdf"
		}
		if i == 2 {
			rec.Doc.Signer.FullName = "Trần Thị Bích"
			rec.Doc.Number = "77"
			rec.Doc.Notation = "KH-UBND"
		}
		if err := ix.PutDocument(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		q    Query
		want []int
	}{
		{Query{Text: "phe duyet quyet dinh"}, []int{0}},
		{Query{Text: "Quyết Định PHÊ"}, []int{0}},
		{Query{Text: "dat dai"}, []int{1}},
		{Query{Text: "đất đai"}, []int{1}},
		{Query{Text: "đất đ"}, []int{1}},       // prefixes
		{Query{Text: "đấ"}, []int{3, 2, 1, 0}}, // "nhân dân" in every sender name
		{Query{Text: "dak lak"}, []int{3}},
		{Query{Text: "kế hoạch tết"}, []int{2}},
		{Query{Text: "viec"}, []int{1, 0}},
		{Query{Text: "KH-UBND"}, []int{2}},
		{Query{Text: "pdf"}, []int{3, 2, 1, 0}},
		{Query{Text: "cong nhan"}, []int{3}},                      // a file name
		{Query{Text: "bich"}, []int{2}},                           // signer
		{Query{Text: "thanh pho ho chi minh"}, []int{3, 2, 1, 0}}, // sender name
		{Query{Signer: "nguyen van"}, []int{3, 1, 0}},
		{Query{Signer: "dat"}, nil}, // signer only searches the signer
		{Query{Number: "77"}, []int{2}},
		{Query{Number: "7"}, nil}, // exact
		{Query{Text: "quyet dinh"}, []int{3, 0}},
		{Query{Text: "_u0000100h29"}, nil}, // tags are not text
		{Query{Text: "u0000100h29"}, nil},
		{Query{Text: "không có"}, nil},
	} {
		page, err := ix.Search(ctx, tc.q)
		if err != nil {
			t.Errorf("Search(%+v): %v", tc.q, err)
			continue
		}
		var got []int
		for _, it := range page.Items {
			got = append(got, slices.Index(subjects, it.Subject))
		}
		if !slices.Equal(got, tc.want) || page.Total != len(tc.want) {
			t.Errorf("Search(%+v) = %v (total %d), want %v", tc.q, got, page.Total, tc.want)
		}
	}
}

func TestRelevance(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	var recs []Record
	for i := range 30 {
		rec := testRecord(t0.Add(time.Duration(i)*time.Minute), hcm, dept1)
		rec.Doc.Subject = fmt.Sprintf("Thông báo lịch công tác tuần %d", i)
		rec.Files = []File{{Name: "lich.pdf"}}
		recs = append(recs, rec)
	}
	recs[5].Files[0].Name = "Quyết định số 5.pdf"      // in a file name
	recs[9].Doc.Subject = "Quyết định phê duyệt dự án" // in the subject
	recs[20].Doc.Signer.FullName = "Trần Quyết Định"   // in the signer
	if err := ix.PutDocuments(ctx, recs); err != nil {
		t.Fatal(err)
	}
	page, err := ix.Search(ctx, Query{Text: "quyết định", Sort: SortRelevance})
	if err != nil {
		t.Fatal(err)
	}
	var got []document.ID
	for _, it := range page.Items {
		got = append(got, it.ID)
	}
	want := []document.ID{recs[9].Doc.ID, recs[20].Doc.ID, recs[5].Doc.ID}
	if !slices.Equal(got, want) {
		t.Errorf("relevance order %v, want %v (subject, signer, file name)", got, want)
	}
}

// corpus puts n documents between a few units into ix and returns them
// in acceptance order.
func corpus(t *testing.T, ix *Index, n int) []Record {
	t.Helper()
	units := []document.UnitID{hcm, dept1, dept2, dept3, "000.00.00.G12"}
	types := []string{"QĐ", "CV", "TB", "KH"}
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []Record
	for i := range n {
		acc := t0.Add(time.Duration(i) * time.Hour)
		from := units[rng.IntN(len(units))]
		var to []document.UnitID
		for _, u := range units {
			if u != from && rng.IntN(3) == 0 {
				to = append(to, u)
			}
		}
		if len(to) == 0 {
			to = []document.UnitID{units[(slices.Index(units, from)+1)%len(units)]}
		}
		rec := testRecord(acc, from, to...)
		rec.Doc.Type = types[i%len(types)]
		rec.Doc.TypeName = ""
		rec.Doc.Number = fmt.Sprint(i % 50)
		rec.Doc.PromulgatedAt = t0.AddDate(0, 0, rng.IntN(30)).Format("2006-01-02")
		rec.Doc.Subject = []string{"Về việc quản lý đất đai", "Quyết định khen thưởng", "Thông báo lịch họp"}[i%3] + fmt.Sprintf(" đợt %d", i)
		rec.Files = []File{{Name: "van-ban.pdf", MediaType: "application/pdf", Size: 1, SHA256: "00"}}
		recs = append(recs, rec)
	}
	for i := 0; i < n; i += 100 {
		if err := ix.PutDocuments(t.Context(), recs[i:min(i+100, n)]); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

func TestFiltersAndPagination(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	recs := corpus(t, ix, 250)
	// Statuses: some recipients report, so that the latest status varies.
	latest := map[document.ID]map[document.StatusCode]bool{}
	for i, r := range recs {
		if i%4 != 0 {
			continue
		}
		u := r.Doc.To[0]
		codes := []document.StatusCode{"01", "03"}
		if i%8 == 0 {
			codes = append(codes, "06")
		}
		for j, c := range codes {
			if _, err := ix.AddStatus(ctx, document.Status{DocumentID: r.Doc.ID, Unit: u, Code: c, Time: r.AcceptedAt.Add(time.Duration(j+1) * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		latest[r.Doc.ID] = map[document.StatusCode]bool{codes[len(codes)-1]: true}
	}

	since, until := t0.Add(40*time.Hour), t0.Add(200*time.Hour)
	for _, tc := range []struct {
		name string
		q    Query
		keep func(Record) bool
	}{
		{"all", Query{}, func(Record) bool { return true }},
		{"from", Query{From: dept1}, func(r Record) bool { return r.Doc.From == dept1 }},
		{"to", Query{To: dept2}, func(r Record) bool { return slices.Contains(r.Doc.To, dept2) }},
		{"unit", Query{Unit: dept3}, func(r Record) bool { return r.Doc.From == dept3 || slices.Contains(r.Doc.To, dept3) }},
		{"from to", Query{From: hcm, To: dept1}, func(r Record) bool { return r.Doc.From == hcm && slices.Contains(r.Doc.To, dept1) }},
		{"type", Query{Type: "QĐ"}, func(r Record) bool { return r.Doc.Type == "QĐ" }},
		{"number", Query{Number: "7"}, func(r Record) bool { return r.Doc.Number == "7" }},
		{"range", Query{Since: since, Until: until}, func(r Record) bool { return !r.AcceptedAt.Before(since) && r.AcceptedAt.Before(until) }},
		{"status 06", Query{Status: "06"}, func(r Record) bool { return latest[r.Doc.ID]["06"] }},
		{"status 03", Query{Status: "03"}, func(r Record) bool { return latest[r.Doc.ID]["03"] }},
		{"text", Query{Text: "dat dai"}, func(r Record) bool { return strings.HasPrefix(r.Doc.Subject, "Về việc") }},
		{"text unit range", Query{Text: "dat dai", Unit: dept1, Since: since, Until: until}, func(r Record) bool {
			return strings.HasPrefix(r.Doc.Subject, "Về việc") && (r.Doc.From == dept1 || slices.Contains(r.Doc.To, dept1)) &&
				!r.AcceptedAt.Before(since) && r.AcceptedAt.Before(until)
		}},
		{"text status", Query{Text: "quyet", Status: "03"}, func(r Record) bool {
			return strings.HasPrefix(r.Doc.Subject, "Quyết") && latest[r.Doc.ID]["03"]
		}},
		{"unit type status range", Query{Unit: hcm, Type: "QĐ", Status: "06", Since: since}, func(r Record) bool {
			return (r.Doc.From == hcm || slices.Contains(r.Doc.To, hcm)) && r.Doc.Type == "QĐ" && latest[r.Doc.ID]["06"] && !r.AcceptedAt.Before(since)
		}},
	} {
		for _, sort := range []string{"", SortAcceptedAsc, SortPromulgatedDesc, SortRelevance} {
			t.Run(tc.name+"/"+sort, func(t *testing.T) {
				var want []Record
				for _, r := range recs {
					if tc.keep(r) {
						want = append(want, r)
					}
				}
				if len(want) == 0 {
					t.Fatal("filter keeps nothing: a useless case")
				}
				q := tc.q
				q.Sort, q.Limit = sort, 7
				seen := map[document.ID]int{}
				var order []Summary
				for pages := 0; ; pages++ {
					if pages > 100 {
						t.Fatal("pagination does not end")
					}
					page, err := ix.Search(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					if page.Total != len(want) {
						t.Fatalf("Total = %d, want %d", page.Total, len(want))
					}
					if len(page.Items) > 7 {
						t.Fatalf("page of %d items", len(page.Items))
					}
					for _, it := range page.Items {
						seen[it.ID]++
						order = append(order, it)
					}
					if page.NextCursor == "" {
						break
					}
					q.Cursor = page.NextCursor
				}
				for _, r := range want {
					if seen[r.Doc.ID] != 1 {
						t.Errorf("%s seen %d times", r.Doc.ID, seen[r.Doc.ID])
					}
				}
				if len(seen) != len(want) {
					t.Errorf("%d distinct items, want %d", len(seen), len(want))
				}
				sorted := slices.IsSortedFunc(order, func(a, b Summary) int {
					switch sort {
					case SortAcceptedAsc:
						return a.AcceptedAt.Compare(b.AcceptedAt)
					case SortPromulgatedDesc:
						if c := -cmpStr(a.PromulgatedAt, b.PromulgatedAt); c != 0 {
							return c
						}
						return -a.AcceptedAt.Compare(b.AcceptedAt)
					case SortRelevance:
						if tc.q.Text != "" {
							return 0
						}
					}
					return -a.AcceptedAt.Compare(b.AcceptedAt)
				})
				if !sorted {
					t.Errorf("items out of %q order", sort)
				}
			})
		}
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestUnitIsolation: the per-unit filter never shows a document between two
// other units, whatever else the query says.
func TestUnitIsolation(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	recs := corpus(t, ix, 120)
	// A sender writing another unit's tags into its text gains nothing.
	forged := testRecord(t0.Add(-time.Hour), dept1, dept2)
	forged.Doc.Subject = "Giả mạo " + (&ftsRow{from: dept3, to: []document.UnitID{dept3}, typ: "QĐ", number: "1", codes: []document.StatusCode{"01"}}).tags("\n\n\nnguyen")
	forged.Doc.Notation = tagUnit(dept3)
	forged.Files = []File{{Name: tagUnit(dept3) + ".pdf"}}
	if err := ix.PutDocument(ctx, forged); err != nil {
		t.Fatal(err)
	}
	recs = append(recs, forged)
	for _, u := range []document.UnitID{hcm, dept1, dept2, dept3, "000.00.00.G12", "000.04.00.H29"} {
		for _, q := range []Query{{Unit: u}, {Unit: u, Text: "quyet"}, {Unit: u, Sort: SortPromulgatedDesc}, {Unit: u, Status: "01"}, {Unit: u, Text: "dot", Sort: SortRelevance}} {
			q.Limit = MaxLimit
			page, err := ix.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range page.Items {
				i := slices.IndexFunc(recs, func(r Record) bool { return r.Doc.ID == it.ID })
				if r := recs[i]; r.Doc.From != u && !slices.Contains(r.Doc.To, u) {
					t.Errorf("Search(%+v) returned %s from %s to %v", q, it.ID, r.Doc.From, r.Doc.To)
				}
			}
		}
	}
}

func TestSearchBadInput(t *testing.T) {
	ix, _ := openTest(t)
	for _, q := range []Query{
		{Sort: "sideways"},
		{Unit: "000.00.00.h29"},
		{From: "x"},
		{Status: "99"},
		{Cursor: "!!!"},
		{Cursor: cursor{Sort: SortAcceptedAsc, Seq: 1}.encode()}, // cursor of another sort
	} {
		if _, err := ix.Search(t.Context(), q); err == nil {
			t.Errorf("Search(%+v) succeeded", q)
		}
	}
}

var hostile = []string{
	`"`, `""`, `"quyet`, `quyet"`, `*`, `**`, `quyet*`, `*dinh`, `(`, `)`, `()`, `(quyet`, `AND`, `OR`, `NOT`,
	`quyet AND`, `AND dinh`, `NOT quyet`, `NEAR`, `NEAR(quyet dinh, 2)`, `NEAR/2`, `quyet NEAR dinh`,
	`subject:quyet`, `{subject}: x`, `tags:u0000000h29`, `^quyet`, `-quyet`, `+quyet`, `quyet:`, `:`,
	`'`, `';DROP TABLE documents;--`, `%`, `_`, `\`, "\x00", "\xff\xfe", "quyết\u0000định", `rank`, `rowid`,
	`bm25(search)`, `MATCH`, `"" OR ""`, `a` + string(make([]byte, 3000)), "đ", "Đ", "ĐĐĐĐ", "\u0301", "🙂 quyết",
}

func TestHostileSearch(t *testing.T) {
	ix, _ := openTest(t)
	corpus(t, ix, 20)
	for _, s := range hostile {
		for _, q := range []Query{{Text: s}, {Signer: s}, {Number: s}, {Type: s}, {Text: s, Unit: hcm, Sort: SortRelevance}} {
			if _, err := ix.Search(t.Context(), q); err != nil {
				t.Errorf("Search(%q): %v", s, err)
			}
		}
	}
}

func FuzzSearchText(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	f.Add("quyết định đất đai")
	ix, _ := openTest(f)
	rec := testRecord(t0, hcm, dept1)
	if err := ix.PutDocument(f.Context(), rec); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, q := range []Query{{Text: s}, {Text: s, Unit: dept1, Sort: SortRelevance}, {Signer: s, Number: s, Type: s}} {
			page, err := ix.Search(t.Context(), q)
			if err != nil {
				t.Fatalf("Search(%q): %v", s, err)
			}
			if page.Total > 1 {
				t.Fatalf("Search(%q): total %d from one document", s, page.Total)
			}
		}
	})
}

func TestOverdueAndCounters(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	ix.now = func() time.Time { return time.Date(2026, 12, 10, 18, 0, 0, 0, time.UTC) } // 11 Dec 01:00 in Vietnam
	mk := func(min int, due string, to ...document.UnitID) Record {
		r := testRecord(t0.Add(time.Duration(min)*time.Minute), hcm, to...)
		r.Doc.DueDate = due
		if err := ix.PutDocument(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := mk(1, "2026-12-01", dept1, dept2) // overdue for both, until dept1 finishes
	b := mk(2, "2026-12-10", dept1)        // due yesterday in Vietnam: overdue
	mk(3, "2026-12-11", dept1)             // due today: not yet
	mk(4, "", dept1)                       // no due date
	d := mk(5, "2026-11-30", dept1)        // refused: closed
	for _, s := range []document.Status{
		{DocumentID: a.Doc.ID, Unit: dept1, Code: "01", Time: t0},
		{DocumentID: a.Doc.ID, Unit: dept1, Code: "03", Time: t0.Add(time.Hour)},
		{DocumentID: a.Doc.ID, Unit: dept1, Code: "06", Time: t0.Add(2 * time.Hour)},
		{DocumentID: d.Doc.ID, Unit: dept1, Code: "01", Time: t0},
		{DocumentID: d.Doc.ID, Unit: dept1, Code: "02", Time: t0.Add(time.Hour), Description: "Sai thẩm quyền"},
	} {
		if _, err := ix.AddStatus(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(ss []Summary) []document.ID {
		var out []document.ID
		for _, s := range ss {
			out = append(out, s.ID)
		}
		return out
	}
	got, err := ix.Overdue(ctx, dept1, ix.now())
	if err != nil || !slices.Equal(ids(got), []document.ID{b.Doc.ID}) {
		t.Errorf("Overdue(dept1) = %v, %v; want [%s]", ids(got), err, b.Doc.ID)
	}
	got, err = ix.Overdue(ctx, dept2, ix.now())
	if err != nil || !slices.Equal(ids(got), []document.ID{a.Doc.ID}) {
		t.Errorf("Overdue(dept2) = %v, %v; want [%s]", ids(got), err, a.Doc.ID)
	}
	if err := ix.MarkDelivered(ctx, b.Doc.ID, dept1, t0); err != nil {
		t.Fatal(err)
	}
	c, err := ix.UnitCounters(ctx, dept1)
	if want := (Counters{Sent: 0, Received: 5, Pending: 3, Overdue: 1, Undelivered: 2}); err != nil || c != want {
		t.Errorf("UnitCounters(dept1) = %+v, %v; want %+v", c, err, want)
	}
	c, err = ix.UnitCounters(ctx, hcm)
	if want := (Counters{Sent: 5}); err != nil || c != want {
		t.Errorf("UnitCounters(hcm) = %+v, %v; want %+v", c, err, want)
	}
}

// TestCappedTotalAndRankedWindow: past the caps, Total stops at maxTotal
// (TotalCapped set) and a relevance order ranks the newest maxRanked
// matches; pages still visit every match of their order exactly once, and
// a relevance order's pages keep to the set the first page fixed while
// newer documents arrive and the frequency estimates are forgotten.
func TestCappedTotalAndRankedWindow(t *testing.T) {
	ix, _ := openTest(t)
	ix.maxTotal, ix.maxRanked = 25, 30
	ctx := t.Context()
	put := func(from, n int) []Record {
		var recs []Record
		for i := from; i < from+n; i++ {
			rec := testRecord(t0.Add(time.Duration(i)*time.Minute), hcm, dept1)
			// Some subjects say "đất đai" twice, some once: ranks differ.
			rec.Doc.Subject = strings.Repeat("Về việc quản lý đất đai ", 1+i%3) + fmt.Sprint(i)
			if i%4 == 0 {
				rec.Doc.Subject = fmt.Sprintf("Thông báo lịch họp %d", i) // and "dat dai" only in the file name
				rec.Files = []File{{Name: "dat-dai.pdf"}}
			}
			recs = append(recs, rec)
		}
		if err := ix.PutDocuments(ctx, recs); err != nil {
			t.Fatal(err)
		}
		return recs
	}
	recs := put(0, 60)
	all := func(q Query, during func(page int)) (ids []document.ID, ranks []float64, first Page) {
		for n := 0; ; n++ {
			p, err := ix.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				first = p
			}
			for _, it := range p.Items {
				ids = append(ids, it.ID)
			}
			if p.NextCursor == "" {
				return ids, ranks, first
			}
			var c cursor
			if c, err = decodeCursor(p.NextCursor, q.Sort); err == nil && q.Sort == SortRelevance {
				ranks = append(ranks, c.Rank)
			}
			q.Cursor = p.NextCursor
			if during != nil {
				during(n)
			}
		}
	}

	ids, _, first := all(Query{Text: "dat dai", Limit: 7}, nil)
	if first.Total != 25 || !first.TotalCapped || first.Ranked != 0 {
		t.Errorf("default order: total %d capped %v ranked %d, want 25 true 0", first.Total, first.TotalCapped, first.Ranked)
	}
	if len(ids) != 60 || len(unique(ids)) != 60 {
		t.Errorf("default order visits %d documents (%d distinct), want 60", len(ids), len(unique(ids)))
	}

	more := 60
	ids, ranks, first := all(Query{Text: "dat dai", Sort: SortRelevance, Limit: 7}, func(int) {
		put(more, 5) // newer matches arrive between pages
		more += 5
		ix.idfs.mu.Lock()
		ix.idfs.m = nil // and the estimates are forgotten
		ix.idfs.mu.Unlock()
	})
	if first.Total != 25 || !first.TotalCapped || first.Ranked != 30 {
		t.Errorf("relevance: total %d capped %v ranked %d, want 25 true 30", first.Total, first.TotalCapped, first.Ranked)
	}
	var want []document.ID
	for _, r := range recs[30:] {
		want = append(want, r.Doc.ID)
	}
	if got := slices.SortedFunc(slices.Values(ids), cmpID); !slices.Equal(got, slices.SortedFunc(slices.Values(want), cmpID)) {
		t.Errorf("relevance visits %d documents, want the newest 30 of the first 60 once each", len(ids))
	}
	if !slices.IsSorted(ranks) {
		t.Errorf("ranks across pages not in order: %v", ranks)
	}

	// Fewer matches than the window: all are ranked, Ranked stays 0.
	p, err := ix.Search(ctx, Query{Text: "dat dai", Sort: SortRelevance, Until: t0.Add(20 * time.Minute), Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != 20 || p.TotalCapped || p.Ranked != 0 || len(p.Items) != 20 {
		t.Errorf("small relevance: total %d capped %v ranked %d items %d, want 20 false 0 20", p.Total, p.TotalCapped, p.Ranked, len(p.Items))
	}
	// Subject matches rank before file-name-only ones.
	for i, it := range p.Items {
		if fileOnly := !strings.Contains(Fold(it.Subject), "dat dai"); fileOnly != (i >= 15) {
			t.Errorf("relevance item %d %q out of place", i, it.Subject)
		}
	}
}

func unique(ids []document.ID) []document.ID {
	return slices.Compact(slices.SortedFunc(slices.Values(ids), cmpID))
}

func cmpID(a, b document.ID) int { return strings.Compare(string(a), string(b)) }

// TestRelevanceCursorMismatch: a relevance cursor carries the estimates of
// its query's terms; one given with other words is refused, not misread.
func TestRelevanceCursorMismatch(t *testing.T) {
	ix, _ := openTest(t)
	corpus(t, ix, 40)
	p, err := ix.Search(t.Context(), Query{Text: "dat dai", Sort: SortRelevance, Limit: 2})
	if err != nil || p.NextCursor == "" {
		t.Fatalf("first page: %v, cursor %q", err, p.NextCursor)
	}
	_, err = ix.Search(t.Context(), Query{Text: "quan ly dat dai", Sort: SortRelevance, Limit: 2, Cursor: p.NextCursor})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("cursor of another query: %v, want ErrInvalid", err)
	}
}

// TestTotalAsOfFirstPage: the first page counts; later pages repeat its
// count (they do not walk the matches again) while documents arrive, and a
// first page that holds every match is its own count.
func TestTotalAsOfFirstPage(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	corpus(t, ix, 40)
	for _, sort := range []string{SortAcceptedDesc, SortRelevance, SortPromulgatedDesc} {
		q := Query{Text: "dat dai", Sort: sort, Limit: 3}
		first, err := ix.Search(ctx, q)
		if err != nil || first.NextCursor == "" || first.Total <= 3 {
			t.Fatalf("%s: first page %d of %d, %v", sort, len(first.Items), first.Total, err)
		}
		all, err := ix.Search(ctx, Query{Text: "dat dai", Sort: sort, Limit: MaxLimit})
		if err != nil || all.Total != first.Total || len(all.Items) != all.Total || all.NextCursor != "" {
			t.Fatalf("%s: one page of all: %d items, total %d (first page's %d), %v", sort, len(all.Items), all.Total, first.Total, err)
		}
		rec := testRecord(t0.Add(-time.Duration(len(sort))*time.Hour), hcm, dept1) // older: on a later page
		if err := ix.PutDocument(ctx, rec); err != nil {
			t.Fatal(err)
		}
		q.Cursor = first.NextCursor
		second, err := ix.Search(ctx, q)
		if err != nil || second.Total != first.Total {
			t.Errorf("%s: second page total %d, %v; want the first page's %d", sort, second.Total, err, first.Total)
		}
		if now, _ := ix.Search(ctx, Query{Text: "dat dai", Sort: sort}); now.Total != first.Total+1 {
			t.Errorf("%s: a new first page counts %d, want %d", sort, now.Total, first.Total+1)
		}
	}
}

// TestScanWindow: counting and ranking look at the newest maxScanned
// documents of the date range (whole days): past them the total is a lower
// bound (TotalCapped) and relevance ranks the window's matches, or beyond it
// enough of the newest to fill a page; a range inside the window counts
// exactly, and pages of the default order still visit every match.
func TestScanWindow(t *testing.T) {
	ix, _ := openTest(t)
	ix.maxScanned = 30
	ctx := t.Context()
	midnight := t0.Truncate(24 * time.Hour) // accepted_days counts UTC days
	day := func(d int) time.Time { return midnight.Add(time.Duration(d) * 24 * time.Hour) }
	var recs []Record
	for d := range 10 { // 10 documents a day for 10 days, all about "đất đai"; days 0 and 1 also "hiếm"
		for i := range 10 {
			rec := testRecord(day(d).Add(time.Duration(8+i)*time.Hour), hcm, dept1)
			rec.Doc.Subject = fmt.Sprintf("Về việc quản lý đất đai %d-%d", d, i)
			if d < 2 && i < 3 {
				rec.Doc.Subject += " hiếm"
			}
			recs = append(recs, rec)
		}
	}
	if err := ix.PutDocuments(ctx, recs); err != nil {
		t.Fatal(err)
	}
	visit := func(q Query) (ids []document.ID, first Page) {
		for n := 0; ; n++ {
			p, err := ix.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				first = p
			}
			for _, it := range p.Items {
				ids = append(ids, it.ID)
			}
			if p.NextCursor == "" {
				return ids, first
			}
			q.Cursor = p.NextCursor
		}
	}
	for _, tc := range []struct {
		name          string
		q             Query
		total, ranked int
		capped        bool
		visits        int
	}{
		// The newest three days hold the 30 documents scanned.
		{"all days", Query{Text: "dat dai", Limit: 7}, 30, 0, true, 100},
		{"inside the window", Query{Text: "dat dai", Since: day(8), Limit: 7}, 20, 0, false, 20},
		{"window of the range", Query{Text: "dat dai", Until: day(5), Limit: 7}, 30, 0, true, 50},
		{"relevance", Query{Text: "dat dai", Sort: SortRelevance, Limit: 7}, 30, 30, true, 30},
		{"relevance inside", Query{Text: "dat dai", Sort: SortRelevance, Since: day(8), Limit: 7}, 20, 0, false, 20},
		// Older than the window: a page that holds them all counts them;
		// otherwise what the walk saw is a lower bound.
		{"old, one page", Query{Text: "hiem"}, 6, 0, false, 6},
		{"old, pages", Query{Text: "hiem", Limit: 2}, 3, 0, true, 6},
		{"old, relevance", Query{Text: "hiem", Sort: SortRelevance, Limit: 2}, 3, 3, true, 3},
		{"old, relevance, one page", Query{Text: "hiem", Sort: SortRelevance}, 6, 0, false, 6},
	} {
		ids, first := visit(tc.q)
		if first.Total != tc.total || first.TotalCapped != tc.capped || first.Ranked != tc.ranked {
			t.Errorf("%s: total %d capped %v ranked %d, want %d %v %d", tc.name, first.Total, first.TotalCapped, first.Ranked, tc.total, tc.capped, tc.ranked)
		}
		if len(ids) != tc.visits || len(unique(ids)) != tc.visits {
			t.Errorf("%s: pages visit %d documents (%d distinct), want %d", tc.name, len(ids), len(unique(ids)), tc.visits)
		}
	}
	// Moving a document to another day moves it in accepted_days.
	moved := recs[0]
	moved.AcceptedAt = day(9).Add(23 * time.Hour)
	if err := ix.PutDocument(ctx, moved); err != nil {
		t.Fatal(err)
	}
	rows := dumpRows(t, ix, "SELECT day, docs FROM accepted_days ORDER BY day")
	if len(rows) != 10 || !strings.HasSuffix(rows[0], " 9]") || !strings.HasSuffix(rows[9], " 11]") {
		t.Errorf("accepted_days after a move: %v", rows)
	}
}
