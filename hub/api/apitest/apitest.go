// Package apitest stands up the hub's records on real components for tests
// of the API and the web UI: the shared S3 test gateway (versitygw) with a
// bucket of its own, a SQLite index, a development CA, containers signed
// with the units' keys, archived, receipted and indexed as the pipeline does
// (projection.Record), and an accounts store on an embedded NATS server.
package apitest

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// The corpus's units.
const (
	UnitA = document.UnitID("000.01.00.H29") // Sở Nội vụ
	UnitB = document.UnitID("000.02.00.H29") // Sở Tài nguyên và Môi trường
	UnitC = document.UnitID("000.03.00.H29") // Ủy ban nhân dân Quận 1
)

// FastHash keeps tests quick; the hash format and code path are the real ones.
var FastHash = auth.HashParams{MemoryKiB: 8 * 1024, Time: 1, Threads: 1}

// Password is every test account's password.
const Password = "mật khẩu dài đủ"

// Fixture is the records of a hub and what made them.
type Fixture struct {
	T          *testing.T
	Index      *index.Index
	Archive    *archive.Store
	CA         *pki.CA
	Trust      *pki.Trust
	Hub        *pki.Signer
	Signers    map[document.UnitID]*pki.Signer
	Auth       *auth.Store
	NATS       *broker.Server // holds the accounts' buckets
	Records    *api.Records
	AdminToken string
	Docs       map[string]document.ID // the corpus, by name
	Log        *slog.Logger
}

var bucketSeq struct {
	sync.Mutex
	n int
}

// New builds a fixture with the corpus (see Corpus); opts change the
// accounts store's configuration.
func New(t *testing.T, opts ...func(*auth.Config)) *Fixture {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f := &Fixture{T: t, Signers: map[document.UnitID]*pki.Signer{}, Docs: map[string]document.ID{}, AdminToken: "admin-token-for-tests", Log: log}
	endpoint, ak, sk := s3embed.ForTest(t)
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("apitest-%d-%d", os.Getpid(), bucketSeq.n)
	bucketSeq.Unlock()
	var err error
	if f.Archive, err = archive.New(ctx, archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: bucket}, log); err != nil {
		t.Fatal(err)
	}
	if f.Index, err = index.Open(ctx, index.Config{Path: dir + "/index.db"}, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Index.Close() })
	// The CA and the hub's certificate predate the corpus: receipts are
	// checked as of their acceptance.
	if f.CA, err = pki.InitCAAt(dir+"/pki", "", Day(1, 1).AddDate(-1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if f.Trust, err = pki.LoadTrust(f.CA.RootsPath()); err != nil {
		t.Fatal(err)
	}
	if err := f.Trust.LoadCRL(f.CA.CRLPath()); err != nil {
		t.Fatal(err)
	}
	if f.Hub, err = pki.LoadSigner(f.CA.HubKeyPath(), f.CA.HubCertPath()); err != nil {
		t.Fatal(err)
	}
	names := map[document.UnitID]string{UnitA: "Sở Nội vụ", UnitB: "Sở Tài nguyên và Môi trường", UnitC: "Ủy ban nhân dân Quận 1"}
	for _, u := range []document.UnitID{UnitA, UnitB, UnitC} {
		kp, cp, err := f.CA.IssueUnit(u, names[u], pki.ECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		if f.Signers[u], err = pki.LoadSigner(kp, cp); err != nil {
			t.Fatal(err)
		}
		if err := f.Index.PutUnit(ctx, index.Unit{ID: u, Name: names[u], Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	acfg := auth.Config{Path: dir + "/auth/users.db", PasswordHash: FastHash}
	for _, o := range opts {
		o(&acfg)
	}
	// The accounts' buckets on an embedded NATS server of the fixture's own.
	f.NATS = broker.ForTest(t)
	if f.Auth, err = auth.Open(ctx, acfg, f.NATS.HubJetStream(t), log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Auth.Close() })
	f.Records = &api.Records{Index: f.Index, Archive: f.Archive, Trust: f.Trust, CursorKey: f.Auth.CursorKey()}
	f.Corpus()
	return f
}

// Day is a date of 2026 in Vietnam, at 10:00.
func Day(month, d int) time.Time {
	return time.Date(2026, time.Month(month), d, 10, 0, 0, 0, time.FixedZone("ICT", 7*3600))
}

// DocSpec describes a document to accept.
type DocSpec struct {
	Name, Subject, Type, Number, Signer string
	From                                document.UnitID
	To                                  []document.UnitID
	Accepted                            time.Time
	Due                                 string
	Files                               []container.File // default: van-ban.pdf
	Upstream                            *document.Upstream
}

// Accept signs, verifies, archives, receipts and indexes a document as the
// pipeline does, and returns its id.
func (f *Fixture) Accept(s DocSpec) document.ID {
	t := f.T
	t.Helper()
	ctx := t.Context()
	d := document.Template(s.Accepted)
	d.ID = document.NewID(s.Accepted)
	d.From, d.To, d.Subject, d.Type, d.Number = s.From, s.To, s.Subject, s.Type, s.Number
	d.FromName = ""
	if dt, ok := document.LookupDocType(s.Type); ok {
		d.TypeName = dt.Name
		d.Notation = s.Type + "-UBND"
	}
	d.Signer.FullName, d.DueDate, d.Upstream = s.Signer, s.Due, s.Upstream
	d.PromulgatedAt = s.Accepted.Format(time.DateOnly)
	meta, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	files := s.Files
	if files == nil {
		files = []container.File{{Name: "van-ban.pdf", Data: []byte("%PDF-1.7\n" + s.Subject + "\n%%EOF\n")}}
	}
	data, err := container.Build(meta, files, f.Signers[s.From])
	if err != nil {
		t.Fatal(err)
	}
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: f.Trust})
	if !rep.Valid {
		t.Fatalf("%s: %v", s.Name, rep.Reasons)
	}
	key := projection.ContainerKey(d.ID)
	if _, err := f.Archive.Put(ctx, key, data, api.MediaContainer, nil); err != nil {
		t.Fatal(err)
	}
	rc := &container.Receipt{DocumentID: d.ID, From: d.From, To: d.To, ContainerSHA256: rep.ContainerSHA256,
		ContainerSize: int64(len(data)), ArchiveKey: key, AcceptedAt: s.Accepted.UTC()}
	rb, err := container.SignReceipt(rc, f.Hub)
	if err != nil {
		t.Fatal(err)
	}
	rkey := projection.ReceiptKey(d.ID)
	if _, err := f.Archive.Put(ctx, rkey, rb, api.MediaReceipt, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Index.PutDocument(ctx, projection.Record(c, rep, rc, rkey)); err != nil {
		t.Fatal(err)
	}
	if s.Name != "" {
		f.Docs[s.Name] = d.ID
	}
	return d.ID
}

// Corpus accepts four named documents between A, B and C and 25 notices
// from B to C (for pagination), with deliveries and statuses:
//
//   - qd-dat-dai: A → B, "Quyết định … đất đai …", QĐ 101, 2026-01-15, due
//     2026-01-30; delivered to B, B reported 01 then 03.
//   - cv-dat-dai: A → C, "Công văn … đất đai …", CV 102, 2026-02-10.
//   - qd-bc: B → C, "Quyết định thành lập Ban chỉ đạo chuyển đổi số", QĐ
//     201, 2026-02-20, signed by Trần Thị Bình; a PDF with a Vietnamese
//     name, a DOCX and an HTML file.
//   - bc-cchc: C → A and B, BC 301, 2026-03-05, due 2026-03-10; B finished
//     it (01, 03, 06), A did nothing (overdue).
//   - 25 × "Thông báo lịch họp giao ban tuần N": B → C, TB 400–424, daily
//     from 2026-04-01.
func (f *Fixture) Corpus() {
	f.Accept(DocSpec{Name: "qd-dat-dai", Subject: "Quyết định phê duyệt kế hoạch sử dụng đất đai năm 2026", Type: "QĐ", Number: "101",
		Signer: "Nguyễn Văn An", From: UnitA, To: []document.UnitID{UnitB}, Accepted: Day(1, 15), Due: "2026-01-30"})
	f.Accept(DocSpec{Name: "cv-dat-dai", Subject: "Công văn về việc tăng cường quản lý đất đai trên địa bàn", Type: "CV", Number: "102",
		Signer: "Lê Thị Hoa", From: UnitA, To: []document.UnitID{UnitC}, Accepted: Day(2, 10)})
	f.Accept(DocSpec{Name: "qd-bc", Subject: "Quyết định thành lập Ban chỉ đạo chuyển đổi số", Type: "QĐ", Number: "201",
		Signer: "Trần Thị Bình", From: UnitB, To: []document.UnitID{UnitC}, Accepted: Day(2, 20),
		Files: []container.File{
			{Name: "quyết-định.pdf", Data: []byte("%PDF-1.7\nQuyết định\n%%EOF\n")},
			{Name: "phu-luc.docx", Data: []byte("PK\x03\x04 docx")},
			{Name: "trang.html", Data: []byte("<script>alert(1)</script>")},
		}})
	f.Accept(DocSpec{Name: "bc-cchc", Subject: "Báo cáo sơ kết công tác cải cách hành chính", Type: "BC", Number: "301",
		Signer: "Phạm Minh Châu", From: UnitC, To: []document.UnitID{UnitA, UnitB}, Accepted: Day(3, 5), Due: "2026-03-10"})
	for i := range 25 {
		f.Accept(DocSpec{Subject: fmt.Sprintf("Thông báo lịch họp giao ban tuần %d", i+1), Type: "TB", Number: fmt.Sprint(400 + i),
			Signer: "Võ Văn Dũng", From: UnitB, To: []document.UnitID{UnitC}, Accepted: Day(4, 1).Add(time.Duration(i) * 24 * time.Hour)})
	}
	ctx := f.T.Context()
	qd := f.Docs["qd-dat-dai"]
	if err := f.Index.MarkDelivered(ctx, qd, UnitB, Day(1, 15).Add(time.Minute)); err != nil {
		f.T.Fatal(err)
	}
	for _, st := range []document.Status{
		{DocumentID: qd, Unit: UnitB, Time: Day(1, 15).Add(2 * time.Minute), Code: document.StatusDelivered},
		{DocumentID: qd, Unit: UnitB, Time: Day(1, 16), Code: document.StatusAccepted, Description: "Đã vào sổ", Officer: &document.Officer{Name: "Đỗ Văn Em"}},
		{DocumentID: f.Docs["bc-cchc"], Unit: UnitB, Time: Day(3, 6), Code: document.StatusDelivered},
		{DocumentID: f.Docs["bc-cchc"], Unit: UnitB, Time: Day(3, 7), Code: document.StatusAccepted},
		{DocumentID: f.Docs["bc-cchc"], Unit: UnitB, Time: Day(3, 8), Code: document.StatusFinished},
	} {
		if _, err := f.Index.AddStatus(ctx, st); err != nil {
			f.T.Fatal(err)
		}
	}
}

// User creates an account (password Password) with an API token and
// returns the token.
func (f *Fixture) User(name string, role auth.Role, unit document.UnitID) string {
	f.T.Helper()
	if _, err := f.Auth.AddUser(f.T.Context(), auth.NewUser{Name: name, Role: role, Unit: unit, Password: Password}); err != nil {
		f.T.Fatal(err)
	}
	sec, _, err := f.Auth.NewToken(f.T.Context(), name, "test", 0)
	if err != nil {
		f.T.Fatal(err)
	}
	return sec
}
