package index

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

func openTest(t testing.TB) (*Index, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "index.db")
	ix, err := Open(t.Context(), Config{Path: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix, path
}

var t0 = time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)

// testRecord returns a valid record accepted at acc.
func testRecord(acc time.Time, from document.UnitID, to ...document.UnitID) Record {
	d := document.Template(acc)
	d.ID = document.NewID(acc)
	d.From = from
	d.To = to
	return Record{
		Doc: *d,
		Files: []File{
			{Name: "Quyết định 1234.pdf", MediaType: "application/pdf", Size: 12345, SHA256: "ab12"},
			{Name: "phu-luc.docx", MediaType: "application/vnd.openxmlformats-officedocument.wordprocessingml.document", Size: 999, SHA256: "cd34"},
		},
		Signer:          SignerInfo{SubjectCN: "UBND TP Hồ Chí Minh", Serial: "0a1b", Unit: from, SigningTime: acc.Add(-time.Minute)},
		ContainerSHA256: "ff00",
		Size:            54321,
		ArchiveKey:      acc.Format("2006/01/02/") + string(d.ID) + "/container.asice",
		ReceiptKey:      acc.Format("2006/01/02/") + string(d.ID) + "/receipt.p7s",
		AcceptedAt:      acc,
	}
}

const (
	hcm   = document.UnitID("000.00.00.H29")
	dept1 = document.UnitID("000.01.00.H29")
	dept2 = document.UnitID("000.02.00.H29")
	dept3 = document.UnitID("000.03.00.H29")
)

func TestRoundTripVietnamese(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	rec := testRecord(t0, hcm, dept1, dept2)
	rec.Doc.Subject = "Về việc phê duyệt kế hoạch sử dụng đất đai năm 2027 tại huyện Cần Giờ"
	rec.Doc.FromName = "Ủy ban nhân dân Thành phố Hồ Chí Minh"
	rec.Doc.Signer.FullName = "Đặng Thị Ngọc Ánh"
	raw, err := rec.Doc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rec.RawMeta = raw
	if err := ix.PutDocument(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, err := ix.Get(ctx, rec.Doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Doc, rec.Doc) {
		t.Errorf("doc:\n got %+v\nwant %+v", got.Doc, rec.Doc)
	}
	if !bytes.Equal(got.RawMeta, raw) {
		t.Errorf("raw meta changed")
	}
	want := rec
	want.Signer.SigningTime = want.Signer.SigningTime.UTC()
	want.AcceptedAt = want.AcceptedAt.UTC()
	if !reflect.DeepEqual(got.Record, want) {
		t.Errorf("record:\n got %+v\nwant %+v", got.Record, want)
	}
	if len(got.Recipients) != 2 || got.Recipients[0].Unit != dept1 || got.Recipients[0].State != StateRouted ||
		!got.Recipients[0].RoutedAt.Equal(t0) {
		t.Errorf("recipients = %+v", got.Recipients)
	}
	if _, err := ix.Get(ctx, document.NewID(t0)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) err = %v, want ErrNotFound", err)
	}
}

func TestIdempotentPut(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	rec := testRecord(t0, hcm, dept1, dept2)
	for range 3 {
		if err := ix.PutDocument(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := ix.MarkDelivered(ctx, rec.Doc.ID, dept1, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.AddStatus(ctx, document.Status{DocumentID: rec.Doc.ID, Unit: dept2, Code: "01", Time: t0}); err != nil {
		t.Fatal(err)
	}
	if err := ix.PutDocument(ctx, rec); err != nil { // redelivery after a crash
		t.Fatal(err)
	}
	if page, err := ix.Search(ctx, Query{Status: "01", Text: "dat"}); err != nil || page.Total != 1 {
		t.Errorf("status tag lost on re-put: %+v, %v", page, err)
	}
	var docs, fts, recips int
	for q, dst := range map[string]*int{
		"SELECT count(*) FROM documents":  &docs,
		"SELECT count(*) FROM search":     &fts,
		"SELECT count(*) FROM recipients": &recips,
	} {
		if err := ix.r.QueryRow(q).Scan(dst); err != nil {
			t.Fatal(err)
		}
	}
	if docs != 1 || fts != 1 || recips != 2 {
		t.Errorf("rows: documents %d, search %d, recipients %d; want 1, 1, 2", docs, fts, recips)
	}
	got, err := ix.Get(ctx, rec.Doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := got.Recipients[0]; r.State != StateDelivered || !r.DeliveredAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("delivery state lost on re-put: %+v", r)
	}
	page, err := ix.Search(ctx, Query{Text: "đất đai"})
	if err != nil || page.Total != 1 {
		t.Fatalf("search after re-put: %+v, %v", page, err)
	}

	// A changed recipient list and acceptance time replace the old ones.
	rec.Doc.To = []document.UnitID{dept1, dept3}
	rec.AcceptedAt = t0.Add(time.Hour)
	if err := ix.PutDocument(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, err = ix.Get(ctx, rec.Doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Recipients) != 2 || got.Recipients[1].Unit != dept3 || got.Recipients[0].State != StateDelivered {
		t.Errorf("recipients after change: %+v", got.Recipients)
	}
	for _, q := range []Query{{To: dept2}, {Since: t0, Until: t0.Add(time.Minute)}, {Status: "01"}} {
		if page, err := ix.Search(ctx, q); err != nil || page.Total != 0 {
			t.Errorf("Search(%+v) after change = %d, %v; want 0", q, page.Total, err)
		}
	}
	for _, q := range []Query{{To: dept3}, {Since: t0.Add(time.Hour)}} {
		if page, err := ix.Search(ctx, q); err != nil || page.Total != 1 {
			t.Errorf("Search(%+v) after change = %d, %v; want 1", q, page.Total, err)
		}
	}
}

func TestStatuses(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	rec := testRecord(t0, hcm, dept1, dept2)
	if err := ix.PutDocument(ctx, rec); err != nil {
		t.Fatal(err)
	}
	id := rec.Doc.ID
	st := func(u document.UnitID, c document.StatusCode, min int) document.Status {
		s := document.Status{DocumentID: id, Unit: u, Code: c, Time: t0.Add(time.Duration(min) * time.Minute)}
		if c == document.StatusRefused {
			s.Description = "Không đúng thẩm quyền"
		}
		if c == document.StatusAssigned {
			s.Officer = &document.Officer{Department: "Phòng Tổng hợp", Name: "Lê Văn Bình"}
		}
		return s
	}
	for _, tc := range []struct {
		s       document.Status
		flagged bool
	}{
		{st(dept1, document.StatusDelivered, 1), false},
		{st(dept1, document.StatusAccepted, 1), false}, // same time as 01: after it by arrival
		{st(dept1, document.StatusAssigned, 3), false},
		{st(dept1, document.StatusAssigned, 3), false}, // replay
		{st(dept1, document.StatusFinished, 5), false},
		{st(dept1, document.StatusInProgress, 6), true},  // after 06
		{st(dept1, document.StatusInProgress, 4), false}, // late arrival, in order by time (04 → 05)
		{st(dept2, document.StatusAccepted, 2), true},    // 03 without 01
		{st(dept2, document.StatusRefused, 3), true},     // 02 after 03
		{st(dept2, document.StatusRefused, 3), true},     // replay keeps the flag
	} {
		flagged, err := ix.AddStatus(ctx, tc.s)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.s.Unit, tc.s.Code, err)
		}
		if flagged != tc.flagged {
			t.Errorf("%s %s at %s: flagged = %v, want %v", tc.s.Unit, tc.s.Code, tc.s.Time.Format("15:04"), flagged, tc.flagged)
		}
	}
	if _, err := ix.AddStatus(ctx, st(dept3, document.StatusDelivered, 1)); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("status from a non-recipient: err = %v, want ErrNotRecipient", err)
	}
	if _, err := ix.AddStatus(ctx, st(hcm, document.StatusDelivered, 1)); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("status from the sender: err = %v, want ErrNotRecipient", err)
	}
	other := st(dept1, document.StatusDelivered, 1)
	other.DocumentID = document.NewID(t0)
	if _, err := ix.AddStatus(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Errorf("status for an unknown document: err = %v, want ErrNotFound", err)
	}
	bad := st(dept1, "99", 1)
	if _, err := ix.AddStatus(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown code: err = %v, want ErrInvalid", err)
	}

	det, err := ix.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(det.History) != 8 {
		t.Fatalf("history has %d entries, want 8: %+v", len(det.History), det.History)
	}
	var codes []string
	for _, e := range det.History {
		f := ""
		if e.Flagged {
			f = "!"
		}
		codes = append(codes, string(e.Unit)[4:6]+":"+string(e.Code)+f)
	}
	want := []string{"01:01", "01:03", "02:03!", "01:04", "02:02!", "01:05", "01:06", "01:05!"}
	if !reflect.DeepEqual(codes, want) {
		t.Errorf("history = %v, want %v", codes, want)
	}
	if det.History[3].Officer == nil || det.History[3].Officer.Name != "Lê Văn Bình" {
		t.Errorf("officer lost: %+v", det.History[3])
	}
	r1, r2 := det.Recipients[0], det.Recipients[1]
	if r1.LastCode != document.StatusInProgress || !r1.Done || r1.State != StateDelivered || !r1.DeliveredAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("recipient 1 = %+v", r1)
	}
	if r2.LastCode != document.StatusRefused || !r2.Done || r2.State != StateRefused { // refused, never delivered
		t.Errorf("recipient 2 = %+v", r2)
	}

	// The sender takes its document back: recorded in the history, the
	// recipients' own progress unchanged. A 13 from a unit that is neither
	// sender nor recipient is refused.
	if _, err := ix.AddStatus(ctx, st(dept3, document.StatusCancelled, 7)); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("13 from a stranger: err = %v, want ErrNotRecipient", err)
	}
	if _, err := ix.AddStatus(ctx, st(hcm, document.StatusCancelled, 7)); err != nil {
		t.Fatalf("13 from the sender: %v", err)
	}
	det, err = ix.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if last := det.History[len(det.History)-1]; len(det.History) != 9 || last.Unit != hcm || last.Code != document.StatusCancelled {
		t.Errorf("history after the sender's 13: %+v", det.History)
	}
	if det.Recipients[0].LastCode != document.StatusInProgress || det.Recipients[1].LastCode != document.StatusRefused {
		t.Errorf("recipients after the sender's 13: %+v", det.Recipients)
	}
}

func TestUnits(t *testing.T) {
	ix, path := openTest(t)
	ctx := t.Context()
	if ok, _ := ix.UnitExists(ctx, hcm); ok {
		t.Fatal("unit exists before registration")
	}
	u := Unit{ID: hcm, Name: "Ủy ban nhân dân Thành phố Hồ Chí Minh", Created: t0, CertSerial: "01",
		CertNotAfter: t0.AddDate(2, 0, 0), CertPEM: "-----BEGIN CERTIFICATE-----\n...", NATSUsers: []string{"UABC", "UDEF"},
		CredsExpire: t0.AddDate(0, 3, 0)}
	if err := ix.PutUnit(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := ix.PutUnit(ctx, Unit{ID: dept1, Name: "Sở Tài nguyên và Môi trường", Created: t0, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := ix.PutUnit(ctx, Unit{ID: "bad"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutUnit(bad id) err = %v", err)
	}
	for _, tc := range []struct {
		id             document.UnitID
		exists, active bool
	}{{hcm, true, true}, {dept1, true, false}, {dept2, false, false}} {
		e, _ := ix.UnitExists(ctx, tc.id)
		a, _ := ix.UnitActive(ctx, tc.id)
		if e != tc.exists || a != tc.active {
			t.Errorf("%s: exists %v active %v, want %v %v", tc.id, e, a, tc.exists, tc.active)
		}
	}
	got, err := ix.GetUnit(ctx, hcm)
	if err != nil || !reflect.DeepEqual(got, u) {
		t.Errorf("GetUnit = %+v, %v; want %+v", got, err, u)
	}
	if _, err := ix.GetUnit(ctx, dept2); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetUnit(unknown) err = %v", err)
	}
	if err := ix.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	ix2, err := Open(ctx, Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ix2.Close()
	all, err := ix2.ListUnits(ctx)
	if err != nil || len(all) != 2 || all[0].ID != hcm || !all[1].Disabled {
		t.Errorf("ListUnits after reset and reopen = %+v, %v", all, err)
	}
	if ok, _ := ix2.UnitExists(ctx, dept1); !ok {
		t.Error("unit cache not loaded on open")
	}
}

func TestRejected(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	for i := range 3 {
		sender := hcm
		if i == 2 {
			sender = dept1
		}
		rej := Rejected{
			Ref: fmt.Sprintf("ref-%d", i), Sender: sender, At: t0.Add(time.Duration(i) * time.Minute),
			Reasons:    reason.List{{Code: reason.RecipientUnknown, Message: "000.09.00.H29 chưa đăng ký"}},
			ArchiveKey: fmt.Sprintf("rejected/ref-%d", i),
		}
		for range 2 {
			if err := ix.PutRejected(ctx, rej); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := ix.ListRejected(ctx, hcm, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Ref != "ref-1" || !got[0].Reasons.Has(reason.RecipientUnknown) ||
		got[0].Reasons[0].Message != "000.09.00.H29 chưa đăng ký" || !got[0].At.Equal(t0.Add(time.Minute)) {
		t.Errorf("ListRejected(hcm) = %+v", got)
	}
	all, err := ix.ListRejected(ctx, "", 2)
	if err != nil || len(all) != 2 || all[0].Ref != "ref-2" {
		t.Errorf("ListRejected(all, 2) = %+v, %v", all, err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ix, path := openTest(t)
	ctx := t.Context()
	rec := testRecord(t0, hcm, dept1)
	if err := ix.PutDocument(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.AddStatus(ctx, document.Status{DocumentID: rec.Doc.ID, Unit: dept1, Code: "01", Time: t0}); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	ix2, err := Open(ctx, Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ix2.Close()
	if err := ix2.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	det, err := ix2.Get(ctx, rec.Doc.ID)
	if err != nil || len(det.History) != 1 {
		t.Fatalf("after reopen: %+v, %v", det, err)
	}
	page, err := ix2.Search(ctx, Query{Text: "ke hoach", Unit: dept1})
	if err != nil || page.Total != 1 {
		t.Fatalf("search after reopen: %+v, %v", page, err)
	}
	var v int
	if err := ix2.r.QueryRow("SELECT max(version) FROM schema_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version %d, %v", v, err)
	}
	var mode string
	if err := ix2.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal mode %q, %v", mode, err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("empty config validated")
	}
	if _, err := Open(context.Background(), Config{}, nil); err == nil {
		t.Error("Open with empty config succeeded")
	}
}

func TestReadersAreQueryOnly(t *testing.T) {
	ix, _ := openTest(t)
	if _, err := ix.r.Exec("DELETE FROM units"); err == nil {
		t.Error("a reader connection wrote")
	}
}

func TestResetAndReindex(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	rec := testRecord(t0, hcm, dept1)
	rec.Doc.Subject = "Phương án phòng chống lụt bão"
	count := func(q Query) int {
		t.Helper()
		p, err := ix.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return p.Total
	}
	if err := ix.PutDocument(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := ix.PutRejected(ctx, Rejected{Ref: "r1", Sender: hcm, At: t0}); err != nil {
		t.Fatal(err)
	}
	if n := count(Query{Text: "lụ bã"}); n != 1 {
		t.Fatalf("before reset: %d", n)
	}
	if err := ix.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(Query{}); n != 0 {
		t.Errorf("after reset: %d documents", n)
	}
	if rej, _ := ix.ListRejected(ctx, "", 0); len(rej) != 0 {
		t.Errorf("after reset: %d rejected", len(rej))
	}
	// The vocabulary is rebuilt with the documents: prefixes work again.
	if err := ix.PutDocument(ctx, rec); err != nil {
		t.Fatal(err)
	}
	for _, q := range []Query{{Text: "lụ bã"}, {Text: "phuong an"}, {Unit: dept1}} {
		if n := count(q); n != 1 {
			t.Errorf("after reindex, Search(%+v) = %d, want 1", q, n)
		}
	}
}

// TestConcurrentReadWrite: searches run while documents and statuses are
// written; run with -race.
func TestConcurrentReadWrite(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	done := make(chan error, 1)
	go func() {
		for i := range 100 {
			rec := testRecord(t0.Add(time.Duration(i)*time.Minute), hcm, dept1, dept2)
			if err := ix.PutDocument(ctx, rec); err != nil {
				done <- err
				return
			}
			if _, err := ix.AddStatus(ctx, document.Status{DocumentID: rec.Doc.ID, Unit: dept1, Code: "01", Time: rec.AcceptedAt}); err != nil {
				done <- err
				return
			}
			if i%10 == 0 {
				if err := ix.PutUnit(ctx, Unit{ID: dept3, Name: fmt.Sprint(i)}); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			page, err := ix.Search(ctx, Query{Text: "dat dai", Unit: dept1, Status: "01"})
			if err != nil || page.Total != 100 {
				t.Fatalf("after writes: %d, %v", page.Total, err)
			}
			return
		default:
		}
		if _, err := ix.Search(ctx, Query{Text: "dat", Unit: dept2}); err != nil {
			t.Fatal(err)
		}
		if _, err := ix.UnitExists(ctx, dept3); err != nil {
			t.Fatal(err)
		}
	}
}
