package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"gopkg.in/yaml.v3"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

const (
	me    = document.UnitID("000.00.00.H29")
	other = document.UnitID("000.01.00.H29")
	token = "s3cret-token-for-tests"
)

type fixture struct {
	pki   *agenttest.PKI
	spool *spool.Spool
	inbox *inbox.Store
	srv   *httptest.Server
	kicks int
}

func newFixture(t *testing.T, maxSize int64) *fixture {
	t.Helper()
	f := &fixture{pki: agenttest.NewPKI(t)}
	dir := t.TempDir()
	var err error
	if f.spool, err = spool.Open(t.Context(), dir+"/spool", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.spool.Close() })
	if f.inbox, err = inbox.Open(t.Context(), inbox.Config{Dir: dir + "/inbox", DB: dir + "/state/inbox.db", Quarantine: dir + "/q"}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.inbox.Close() })
	ob, err := outbox.New(me, f.pki.Unit(t, me), f.pki.Trust, f.spool, maxSize)
	if err != nil {
		t.Fatal(err)
	}
	px, err := packets.New(packets.Config{TempDir: dir + "/tmp"}, ob, f.spool, f.inbox)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Deps{Outbox: ob, Documents: f.spool, Inbox: f.inbox, Packets: px, Token: token, Spooled: func() { f.kicks++ }})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path, ctype string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type part struct {
	name, file, ctype string
	data              []byte
}

func form(parts ...part) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.file != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.file)
		}
		h.Set("Content-Disposition", cd)
		if p.ctype != "" {
			h.Set("Content-Type", p.ctype)
		}
		w, _ := mw.CreatePart(h)
		w.Write(p.data)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func meta(t *testing.T, change func(map[string]any)) []byte {
	_, b := agenttest.Meta(me, other)
	var m map[string]any
	json.Unmarshal(b, &m)
	if change != nil {
		change(m)
	}
	out, _ := json.Marshal(m)
	return out
}

type errBody struct {
	Error struct {
		Code     string             `json:"code"`
		Problems []document.Problem `json:"problems"`
		Reasons  []struct{ Code string }
	} `json:"error"`
}

func TestPostDocument(t *testing.T) {
	f := newFixture(t, 256<<10)
	pdf := part{"file", "Quyết định.pdf", "application/pdf", []byte("%PDF-1.7 ...")}
	foreign := f.pki.Container(t, meta(t, func(m map[string]any) { m["from"] = string(other); m["to"] = []string{string(me)} }), 10)
	tests := []struct {
		name   string
		ctype  string
		body   []byte
		status int
		field  string
	}{
		{"invalid metadata", "", nil, 400, "subject"},
		{"malformed recipient", "", nil, 400, "to[0]"},
		{"no files", "", nil, 400, "files"},
		{"too large", "", nil, 413, ""},
		{"wrong content type", "application/json", []byte(`{}`), 415, ""},
		{"metadata not JSON", "", nil, 415, ""},
		{"wrong sender unit", "", nil, 422, "from"},
		{"foreign container", "", nil, 422, "from"},
		{"stray part", "", nil, 400, "notes"},
	}
	bodies := map[string][]part{
		"invalid metadata":    {{"metadata", "", "application/json", meta(t, func(m map[string]any) { m["subject"] = "" })}, pdf},
		"malformed recipient": {{"metadata", "", "application/json", meta(t, func(m map[string]any) { m["to"] = []string{"H29"} })}, pdf},
		"no files":            {{"metadata", "", "application/json", meta(t, nil)}},
		"too large":           {{"metadata", "", "application/json", meta(t, nil)}, {"file", "big.pdf", "", make([]byte, 2<<20)}},
		"metadata not JSON":   {{"metadata", "", "application/xml", []byte("<x/>")}, pdf},
		"wrong sender unit":   {{"metadata", "", "", meta(t, func(m map[string]any) { m["from"] = string(other); m["to"] = []string{string(me)} })}, pdf},
		"foreign container":   {{"container", "x.asice", "", foreign}},
		"stray part":          {{"metadata", "", "", meta(t, nil)}, pdf, {"notes", "", "", []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, body := tt.ctype, tt.body
			if ct == "" {
				ct, body = form(bodies[tt.name]...)
			}
			resp, b := f.do(t, "POST", "/v1/documents", ct, body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			var e errBody
			if err := json.Unmarshal(b, &e); err != nil || e.Error.Code == "" {
				t.Fatalf("error body %s", b)
			}
			if tt.field != "" {
				found := false
				for _, p := range e.Error.Problems {
					found = found || p.Field == tt.field
				}
				if !found {
					t.Fatalf("no problem at %s: %s", tt.field, b)
				}
			}
		})
	}
	if n, _ := f.spool.Depth(t.Context()); n != 0 || f.kicks != 0 {
		t.Fatalf("bad input spooled %d documents", n)
	}

	// Good input: metadata and files, then a prebuilt container.
	m := meta(t, func(m map[string]any) { delete(m, "id"); delete(m, "from") })
	ct, body := form(part{"metadata", "", "application/json", m}, pdf, part{"file", "phu-luc.docx", "application/octet-stream", []byte("PK..")})
	resp, b := f.do(t, "POST", "/v1/documents", ct, body, "Idempotency-Key", "dms-1")
	if resp.StatusCode != 202 {
		t.Fatalf("post: %d %s", resp.StatusCode, b)
	}
	var ok struct {
		ID        document.ID `json:"id"`
		State     string
		Duplicate bool
	}
	json.Unmarshal(b, &ok)
	if ok.ID.Validate() != nil || ok.State != "spooled" || ok.Duplicate || resp.Header.Get("Location") != "/v1/documents/"+string(ok.ID) {
		t.Fatalf("answer %s", b)
	}
	resp, b = f.do(t, "POST", "/v1/documents", ct, body, "Idempotency-Key", "dms-1")
	var again struct {
		ID        document.ID
		Duplicate bool
	}
	json.Unmarshal(b, &again)
	if resp.StatusCode != 202 || again.ID != ok.ID || !again.Duplicate {
		t.Fatalf("repeat: %d %s", resp.StatusCode, b)
	}
	raw, _ := f.spool.Container(ok.ID)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
	if !rep.Valid || len(c.Files()) != 2 || c.Files()[1].MediaType != "application/vnd.openxmlformats-officedocument.wordprocessingml.document" {
		t.Fatalf("spooled: %v", rep.Reasons)
	}
	ct, body = form(part{"container", "x.asice", container.Mimetype, f.pki.Container(t, meta(t, nil), 100)})
	if resp, b := f.do(t, "POST", "/v1/documents", ct, body); resp.StatusCode != 202 {
		t.Fatalf("prebuilt: %d %s", resp.StatusCode, b)
	}
	if f.kicks != 2 {
		t.Fatalf("sender woken %d times", f.kicks)
	}

	resp, b = f.do(t, "GET", "/v1/documents/"+string(ok.ID), "", nil)
	var rec spool.Record
	json.Unmarshal(b, &rec)
	if resp.StatusCode != 200 || rec.State != spool.Spooled || len(rec.Recipients) != 1 || rec.Recipients[0].Unit != other {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/v1/documents/" + string(document.NewID(time.Now())), "/v1/documents/not-an-id"} {
		if resp, _ := f.do(t, "GET", p, "", nil); resp.StatusCode != 404 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t, 0)
	for _, h := range []string{"", "Bearer", "Bearer wrong-token-wrong-token", "Basic " + token, "bearer " + token} {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/inbox", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%q: %d", h, resp.StatusCode)
		}
	}
	for _, p := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
		resp, err := http.Get(f.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	if _, err := New(Deps{Outbox: &outbox.Outbox{}, Documents: f.spool, Inbox: f.inbox, Token: "short"}); err == nil {
		t.Error("a short token was accepted")
	}
}

func TestInbox(t *testing.T) {
	f := newFixture(t, 0)
	ctx := t.Context()
	var ids []document.ID
	for i := range 3 {
		_, m := agenttest.Meta(other, me)
		raw := f.pki.Container(t, m, 100+i)
		rc := f.pki.Receipt(t, raw)
		c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
		rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: f.pki.Trust})
		if _, _, err := f.inbox.Put(ctx, me, inbox.Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.Meta.ID)
	}
	var page struct {
		Items      []inbox.Item `json:"items"`
		NextCursor string       `json:"next_cursor"`
	}
	resp, b := f.do(t, "GET", "/v1/inbox?limit=2", "", nil)
	json.Unmarshal(b, &page)
	if resp.StatusCode != 200 || len(page.Items) != 2 || page.Items[0].ID != ids[0] || page.NextCursor != "2" {
		t.Fatalf("page 1: %s", b)
	}
	resp, b = f.do(t, "GET", "/v1/inbox?since="+page.NextCursor, "", nil)
	page.Items = nil
	json.Unmarshal(b, &page)
	if len(page.Items) != 1 || page.Items[0].ID != ids[2] || page.NextCursor != "3" {
		t.Fatalf("page 2: %s", b)
	}
	for _, q := range []string{"since=-1", "since=x", "limit=0", "limit=100000"} {
		if resp, _ := f.do(t, "GET", "/v1/inbox?"+q, "", nil); resp.StatusCode != 400 {
			t.Errorf("%s: %d", q, resp.StatusCode)
		}
	}
	id := string(ids[0])
	resp, b = f.do(t, "GET", "/v1/inbox/"+id, "", nil)
	var it inbox.Item
	json.Unmarshal(b, &it)
	if resp.StatusCode != 200 || it.From != other || len(it.Statuses) != 1 || !strings.Contains(string(it.Document), `"subject"`) {
		t.Fatalf("get: %s", b)
	}
	resp, b = f.do(t, "GET", "/v1/inbox/"+id+"/files/"+url.PathEscape("phu-luc.txt"), "", nil)
	if resp.StatusCode != 200 || string(b) != "Phụ lục" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "attachment; filename=phu-luc.txt") {
		t.Fatalf("file: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	if resp, _ := f.do(t, "GET", "/v1/inbox/"+id+"/files/nope.pdf", "", nil); resp.StatusCode != 404 {
		t.Fatalf("missing file: %d", resp.StatusCode)
	}
	resp, b = f.do(t, "GET", "/v1/inbox/"+id+"/container", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != container.Mimetype {
		t.Fatalf("container: %d %v", resp.StatusCode, resp.Header)
	}
	if _, rep := container.VerifyBytes(b, container.DefaultLimits, container.Options{Trust: f.pki.Trust}); !rep.Valid {
		t.Fatal(rep.Reasons)
	}

	tests := []struct {
		name, ctype, body string
		status            int
	}{
		{"accepted", "application/json", `{"code":"03","officer":{"department":"Văn thư","name":"Lê Văn C"}}`, 202},
		{"agent's own code", "application/json", `{"code":"01"}`, 400},
		{"unknown field", "application/json", `{"code":"04","note":"x"}`, 400},
		{"refusal without reason", "application/json", `{"code":"02"}`, 400},
		{"not JSON", "text/plain", `03`, 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := f.do(t, "POST", "/v1/inbox/"+id+"/status", tt.ctype, []byte(tt.body))
			if resp.StatusCode != tt.status {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		})
	}
	if resp, _ := f.do(t, "POST", "/v1/inbox/"+string(document.NewID(time.Now()))+"/status", "application/json", []byte(`{"code":"03"}`)); resp.StatusCode != 404 {
		t.Fatalf("status on unknown document: %d", resp.StatusCode)
	}
}

// TestOpenAPIMatchesRoutes holds openapi.yaml and the router together.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &spec); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for p, ops := range spec.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	f := newFixture(t, 0)
	h, err := New(Deps{Outbox: &outbox.Outbox{}, Documents: f.spool, Inbox: f.inbox, Token: token, Metrics: http.NotFoundHandler(),
		Axis: http.NotFoundHandler(), AxisPath: "/axis"})
	if err != nil {
		t.Fatal(err)
	}
	var routed []string
	chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.ReplaceAll(route, "/*", "/{name}")
		routed = append(routed, method+" "+route)
		return nil
	})
	sort.Strings(documented)
	sort.Strings(routed)
	if strings.Join(documented, "\n") != strings.Join(routed, "\n") {
		t.Fatalf("openapi.yaml and the router differ\ndocumented:\n%s\n\nrouted:\n%s", strings.Join(documented, "\n"), strings.Join(routed, "\n"))
	}
}

// packet is an edXML document packet from me to other, as a document
// system writes it.
func packet(t *testing.T, from document.UnitID) []byte {
	t.Helper()
	d := document.Template(time.Now())
	d.ID, d.From, d.To = "", from, []document.UnitID{other}
	var buf bytes.Buffer
	pdf := []byte("%PDF-1.7 công văn")
	if err := edxml.Write(&buf, d, []edxml.File{{Name: "cong-van.pdf", Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(pdf)), nil }}}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func statusPacket(t *testing.T, about string, code document.StatusCode) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := edxml.WriteStatus(&buf, edxml.NewStatusPacket(document.Status{Unit: me, Code: code, Time: time.Now()}, edxml.ResponseFor{DocumentID: about})); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestEdXML: packets in (a document as the body or a .edxml part, statuses
// on received and sent documents), packets out (a received document, a
// recipient's status on a sent one), and the refusals.
func TestEdXML(t *testing.T) {
	f := newFixture(t, 256<<10)
	ctx := t.Context()
	in := packet(t, me)
	resp, b := f.do(t, "POST", "/v1/documents", "application/xml; charset=utf-8", in, "Idempotency-Key", "cv-1")
	var created struct {
		ID        document.ID
		Duplicate bool
	}
	json.Unmarshal(b, &created)
	if resp.StatusCode != 202 || created.ID == "" || created.Duplicate {
		t.Fatalf("packet: %d %s", resp.StatusCode, b)
	}
	raw, _ := f.spool.Container(created.ID)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
	if !rep.Valid || c.Entry("files/original.edxml") == nil || c.Entry("files/cong-van.pdf") == nil {
		t.Fatalf("spooled: %v %v", rep.Reasons, c.Files())
	}
	if resp, b := f.do(t, "POST", "/v1/documents", "text/xml", in, "Idempotency-Key", "cv-1"); resp.StatusCode != 202 || !bytes.Contains(b, []byte(`"duplicate":true`)) {
		t.Fatalf("again: %d %s", resp.StatusCode, b)
	}
	ct, body := form(part{name: "file", file: "cv-2.edxml", data: in})
	if resp, b := f.do(t, "POST", "/v1/documents", ct, body); resp.StatusCode != 202 {
		t.Fatalf("packet part: %d %s", resp.StatusCode, b)
	}
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		status      int
		want        string
	}{
		{"packet with metadata", "", nil, 400, "comes alone"},
		{"another unit's packet", "application/xml", packet(t, other), 422, "From/OrganId"},
		{"a status packet", "application/xml", statusPacket(t, string(created.ID), "03"), 400, "status packet"},
		{"not edXML", "application/xml", []byte("<html/>"), 400, "edxml.malformed"},
		{"too large", "application/xml", append(bytes.Repeat([]byte(" "), 2<<20), in...), 413, "too_large"},
	} {
		ctype, body := tc.ctype, tc.body
		if ctype == "" {
			ctype, body = form(part{name: "metadata", data: meta(t, nil)}, part{name: "file", file: "cv.edxml", data: in})
		}
		if resp, b := f.do(t, "POST", "/v1/documents", ctype, body); resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, b)
		}
	}

	// A received document as a packet; a status packet on it.
	_, m := agenttest.Meta(other, me)
	raw = f.pki.Container(t, m, 100)
	rc := f.pki.Receipt(t, raw)
	c, rep = container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: f.pki.Trust})
	it, _, err := f.inbox.Put(ctx, me, inbox.Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt})
	if err != nil {
		t.Fatal(err)
	}
	resp, b = f.do(t, "GET", "/v1/inbox/"+string(it.ID)+"/edxml", "", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/xml") {
		t.Fatalf("packet out: %d %s", resp.StatusCode, b)
	}
	if p, err := edxml.Parse(bytes.NewReader(b), edxml.Options{}); err != nil || p.Document.Subject != it.Subject || len(p.Attachments) != 2 {
		t.Fatalf("packet out: %v", err)
	}
	if resp, _ := f.do(t, "GET", "/v1/inbox/"+string(document.NewID(time.Now()))+"/edxml", "", nil); resp.StatusCode != 404 {
		t.Fatalf("unknown packet: %d", resp.StatusCode)
	}
	if resp, b := f.do(t, "POST", "/v1/inbox/"+string(it.ID)+"/status", "application/xml", statusPacket(t, it.EdXMLID, "03")); resp.StatusCode != 202 || !strings.Contains(string(b), `"code":"03"`) {
		t.Fatalf("status packet: %d %s", resp.StatusCode, b)
	}
	if resp, b := f.do(t, "POST", "/v1/inbox/"+string(it.ID)+"/status", "application/xml", statusPacket(t, string(created.ID), "04")); resp.StatusCode != 400 {
		t.Fatalf("status packet naming another document: %d %s", resp.StatusCode, b)
	}

	// The sender takes its document back: JSON or a packet, 13 only.
	for _, tc := range []struct {
		ctype  string
		body   []byte
		status int
	}{
		{"application/json", []byte(`{"code":"13","description":"Lấy lại để sửa"}`), 202},
		{"application/xml", statusPacket(t, string(created.ID), "13"), 202},
		{"application/json", []byte(`{"code":"03"}`), 400},
		{"application/xml", statusPacket(t, string(created.ID), "03"), 400},
	} {
		if resp, b := f.do(t, "POST", "/v1/documents/"+string(created.ID)+"/status", tc.ctype, tc.body); resp.StatusCode != tc.status {
			t.Errorf("take back %s: %d %s", tc.body, resp.StatusCode, b)
		}
	}
	if resp, _ := f.do(t, "POST", "/v1/documents/"+string(it.ID)+"/status", "application/json", []byte(`{"code":"13"}`)); resp.StatusCode != 404 {
		t.Fatalf("take back a received document: %d", resp.StatusCode)
	}

	// A recipient's status on the sent document, as a packet.
	f.spool.AddStatus(ctx, document.Status{DocumentID: created.ID, Unit: other, Code: "16", Time: time.Now(), Description: "Từ chối cập nhật"})
	rec, _ := f.spool.Get(ctx, created.ID)
	seq := rec.History[0].Seq
	resp, b = f.do(t, "GET", fmt.Sprintf("/v1/documents/%s/statuses/%d/edxml", created.ID, seq), "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status packet out: %d %s", resp.StatusCode, b)
	}
	sp, err := edxml.ParseStatus(bytes.NewReader(b), edxml.Limits{})
	if err != nil || sp.Code != "16" || sp.From.ID != string(other) || sp.ResponseFor.DocumentID != rec.EdXMLID {
		t.Fatalf("status packet out: %+v %v", sp, err)
	}
	for _, bad := range []string{"0", "x", "99"} {
		if resp, _ := f.do(t, "GET", "/v1/documents/"+string(created.ID)+"/statuses/"+bad+"/edxml", "", nil); resp.StatusCode != 404 {
			t.Errorf("status %s: %d", bad, resp.StatusCode)
		}
	}
}
