package axis

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/axis"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

const (
	me     = document.UnitID("000.00.00.H29")
	other  = document.UnitID("000.01.00.H29")
	system = "vxp.saas.03"
)

var secret = []byte("A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve")

type fixture struct {
	pki   *agenttest.PKI
	spool *spool.Spool
	inbox *inbox.Store
	srv   *Server
	http  *httptest.Server
	now   time.Time
}

func newFixture(t *testing.T, change func(c *Config)) *fixture {
	t.Helper()
	f := &fixture{pki: agenttest.NewPKI(t), now: time.Now()}
	dir := t.TempDir()
	var err error
	if f.spool, err = spool.Open(t.Context(), filepath.Join(dir, "spool"), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.spool.Close() })
	if f.inbox, err = inbox.Open(t.Context(), inbox.Config{Dir: dir + "/inbox", DB: dir + "/state/inbox.db", Quarantine: dir + "/q"}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.inbox.Close() })
	ob, err := outbox.New(me, f.pki.Unit(t, me), f.pki.Trust, f.spool, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	x, err := packets.New(packets.Config{TempDir: dir + "/tmp", UnitName: "UBND"}, ob, f.spool, f.inbox)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Enabled: true, Systems: []System{{ID: system, SecretEnv: "X"}}}
	cfg.SetDefaults(ob.MaxSize())
	if change != nil {
		change(&cfg)
	}
	if f.srv, err = New(cfg, map[string][]byte{system: secret}, x, dir+"/tmp", nil); err != nil {
		t.Fatal(err)
	}
	f.srv.now = func() time.Time { return f.now }
	mux := http.NewServeMux()
	mux.Handle(cfg.Path+"/", f.srv)
	f.http = httptest.NewServer(mux)
	t.Cleanup(f.http.Close)
	return f
}

type answer struct {
	Status    string          `json:"status"`
	ErrorCode int             `json:"ErrorCode"`
	ErrorDesc string          `json:"ErrorDesc"`
	DocID     string          `json:"DocId"`
	Data      json.RawMessage `json:"data"`
	Count     int             `json:"count"`
}

// call makes a signed call, its parameters signed with a fresh timestamp
// (one millisecond later each time, so that no two signatures repeat).
func (f *fixture) call(t *testing.T, method, name string, body io.Reader, ctype string, params ...string) (int, answer) {
	t.Helper()
	f.now = f.now.Add(time.Millisecond)
	ps := []axis.Param{{Name: "Content-Type", Value: ctype}, {Name: "timestamp", Value: axis.FormatTimestamp(f.now, nil)}, {Name: "systemid", Value: system}}
	for i := 0; i+1 < len(params); i += 2 {
		ps = append(ps, axis.Param{Name: params[i], Value: params[i+1]})
	}
	return f.do(t, method, name, body, axis.Sign(secret, ps))
}

func (f *fixture) do(t *testing.T, method, name string, body io.Reader, h http.Header) (int, answer) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, f.http.URL+"/axis/"+name, body)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: not JSON: %d %q", name, resp.StatusCode, b)
	}
	return resp.StatusCode, a
}

func packet(t *testing.T, from document.UnitID) []byte {
	t.Helper()
	d := document.Template(time.Now())
	d.ID, d.From, d.To = "", from, []document.UnitID{other}
	var buf bytes.Buffer
	pdf := []byte("%PDF-1.7 công văn " + time.Now().String())
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

func (f *fixture) original(t *testing.T, id string) []byte {
	t.Helper()
	raw, err := f.spool.Container(document.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.Open(raw, container.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Entry("files/original.edxml").Bytes()
	return b
}

// TestSendEdoc: the packet as the SDK sends it (the body, a line break
// after it, labelled application/octet-stream, hash-file in the SDK's
// spelling), as a multipart part file_doc, or a multipart body labelled
// otherwise; the same packet again is the same document; a status packet
// is queued.
func TestSendEdoc(t *testing.T) {
	f := newFixture(t, nil)
	in := packet(t, me)
	code, a := f.call(t, "POST", "sendEdoc", bytes.NewReader(append(append([]byte{}, in...), "\r\n"...)), "application/octet-stream",
		"from", string(me), "servicetype", "eDoc", "messagetype", "edoc", "hash-file", axis.FileHash(in))
	if code != 200 || a.Status != "OK" || a.ErrorCode != 0 || a.DocID == "" {
		t.Fatalf("sendEdoc: %d %+v", code, a)
	}
	if !bytes.Equal(f.original(t, a.DocID), in) {
		t.Fatal("the packet was not kept byte for byte (without the SDK's line break)")
	}
	first := a.DocID
	code, a = f.call(t, "POST", "sendEdoc", bytes.NewReader(in), "application/octet-stream", "messagetype", "edoc")
	if code != 200 || a.DocID != first || !strings.Contains(a.ErrorDesc, "sent before") {
		t.Fatalf("again: %d %+v", code, a)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("note", "x")
	fw, _ := mw.CreateFormFile("file_doc", "van-ban.edxml")
	second := packet(t, me)
	fw.Write(second)
	mw.Close()
	code, a = f.call(t, "POST", "sendEdoc", bytes.NewReader(buf.Bytes()), mw.FormDataContentType(), "messagetype", "edoc", "hash-file", axis.FileHash(second))
	if code != 200 || a.DocID == "" || a.DocID == first || !bytes.Equal(f.original(t, a.DocID), second) {
		t.Fatalf("multipart: %d %+v", code, a)
	}
	// The same multipart body, labelled octet-stream (as a client that
	// overrides the Content-Type sends it): read all the same.
	code, a = f.call(t, "POST", "sendEdoc", bytes.NewReader(buf.Bytes()), "application/octet-stream", "messagetype", "edoc")
	if code != 200 || !strings.Contains(a.ErrorDesc, "sent before") {
		t.Fatalf("multipart as octet-stream: %d %+v", code, a)
	}
	code, a = f.call(t, "POST", "sendEdoc", bytes.NewReader(statusPacket(t, first, "13")), "application/octet-stream", "messagetype", "status")
	if code != 200 || a.DocID != first {
		t.Fatalf("status: %d %+v", code, a)
	}
	if sts, _ := f.inbox.PendingStatuses(t.Context(), 10); len(sts) != 1 || sts[0].Code != "13" || sts[0].DocumentID != document.ID(first) {
		t.Fatalf("queued %+v", sts)
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		params []string
		code   int
		ecode  axis.Code
	}{
		{"another unit's packet", packet(t, other), nil, 422, axis.CodeRefused},
		{"from another unit", in, []string{"from", string(other)}, 422, axis.CodeRefused},
		{"hash-file mismatch", in, []string{"hash-file", axis.FileHash([]byte("other"))}, 401, axis.CodeUnauthorized},
		{"not edXML", []byte("%PDF-1.7"), nil, 400, axis.CodeBadRequest},
		{"empty", nil, nil, 400, axis.CodeBadRequest},
		{"too large", bytes.Repeat([]byte(" "), 2<<20), nil, 413, axis.CodeTooLarge},
		{"other service", in, []string{"servicetype", "eFax"}, 400, axis.CodeBadRequest},
	} {
		code, a := f.call(t, "POST", "sendEdoc", bytes.NewReader(tc.body), "application/octet-stream", tc.params...)
		if code != tc.code || a.Status != "FAIL" || a.ErrorCode != int(tc.ecode) || a.ErrorDesc == "" {
			t.Errorf("%s: %d %+v", tc.name, code, a)
		}
	}
}

// TestAuthentication: what does not authenticate is refused with the
// protocol's answer; a sign header with unusual spacing and key order is
// verified over the bytes received.
func TestAuthentication(t *testing.T) {
	f := newFixture(t, nil)
	ts := func(d time.Duration) string { return axis.FormatTimestamp(f.now.Add(d), nil) }
	signed := func(raw, keys string, values map[string]string, key []byte) http.Header {
		h := http.Header{}
		h.Set(axis.SignHeader, raw)
		h.Set(axis.SignHeaderKey, keys)
		h.Set(axis.HashHeader, axis.HMAC(key, raw))
		for k, v := range values {
			h.Set("XroadVnpt-"+k, v)
		}
		return h
	}
	odd := func(stamp string) (string, map[string]string) {
		raw := "{ \"XroadVnpt-messagetype\" : \"edoc\",\t\"XroadVnpt-timestamp\":\"" + stamp + "\" ,\"XroadVnpt-systemid\": \"vxp.saas.03\"}"
		return raw, map[string]string{"messagetype": "edoc", "timestamp": stamp, "systemid": system}
	}
	raw, vals := odd(ts(0))
	if code, a := f.do(t, "POST", "getReceivedEdocList", nil, signed(raw, "messagetype;timestamp;systemid", vals, secret)); code != 200 || a.Status != "OK" {
		t.Fatalf("unusual sign header: %d %+v", code, a)
	}
	// The same request again: a replay.
	if code, a := f.do(t, "POST", "getReceivedEdocList", nil, signed(raw, "messagetype;timestamp;systemid", vals, secret)); code != 401 || a.ErrorCode != int(axis.CodeStale) {
		t.Fatalf("replay: %d %+v", code, a)
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		code axis.Code
	}{
		{"unsigned", http.Header{"XroadVnpt-Systemid": {system}}, axis.CodeUnauthorized},
		{"wrong secret", func() http.Header {
			r, v := odd(ts(time.Second))
			return signed(r, "messagetype;timestamp;systemid", v, []byte("wrong secret 123456"))
		}(), axis.CodeUnauthorized},
		{"stale", func() http.Header {
			r, v := odd(ts(-time.Hour))
			return signed(r, "messagetype;timestamp;systemid", v, secret)
		}(), axis.CodeStale},
		{"tampered", func() http.Header {
			r, v := odd(ts(2 * time.Second))
			v["messagetype"] = "status"
			return signed(r, "messagetype;timestamp;systemid", v, secret)
		}(), axis.CodeUnauthorized},
		{"unknown system", func() http.Header {
			r := `{"XroadVnpt-timestamp":"` + ts(3*time.Second) + `","XroadVnpt-systemid":"vxp.other"}`
			return signed(r, "timestamp;systemid", map[string]string{"timestamp": ts(3 * time.Second), "systemid": "vxp.other"}, secret)
		}(), axis.CodeUnauthorized},
	} {
		code, a := f.do(t, "POST", "getReceivedEdocList", nil, tc.h)
		if code != 401 || a.Status != "FAIL" || a.ErrorCode != int(tc.code) {
			t.Errorf("%s: %d %+v", tc.name, code, a)
		}
	}
	if code, a := f.call(t, "POST", "deleteEverything", nil, "application/json"); code != 404 || a.Status != "FAIL" || a.ErrorCode != int(axis.CodeUnknownCall) {
		t.Fatalf("unknown call: %d %+v", code, a)
	}
	if code, a := f.call(t, "GET", "sendEdoc", nil, "application/json"); code != 400 || a.Status != "FAIL" {
		t.Fatalf("GET sendEdoc: %d %+v", code, a)
	}
}

// TestAcceptAnyTimestamp: for an SDK that stamps its requests once, the
// same signed request is taken again, whatever its age.
func TestAcceptAnyTimestamp(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AcceptAnyTimestamp = true })
	h := axis.Sign(secret, []axis.Param{{Name: "timestamp", Value: axis.FormatTimestamp(f.now.AddDate(0, 0, -3), nil)}, {Name: "systemid", Value: system}})
	for range 2 {
		if code, a := f.do(t, "POST", "getReceivedEdocList", nil, h); code != 200 || a.Status != "OK" {
			t.Fatalf("%d %+v", code, a)
		}
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rate, c.Burst = 0.001, 2 })
	for i := range 3 {
		code, a := f.call(t, "POST", "getAgenciesList", nil, "application/json")
		if i < 2 && code != 200 || i == 2 && (code != 429 || a.ErrorCode != int(axis.CodeTooMany)) {
			t.Fatalf("call %d: %d %+v", i, code, a)
		}
	}
}

// TestReceiveFlow: received documents and statuses are listed, fetched as
// packets in base64 and acknowledged; done is not listed again, fail is.
func TestReceiveFlow(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	_, m := agenttest.Meta(other, me)
	raw := f.pki.Container(t, m, 100)
	rc := f.pki.Receipt(t, raw)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: f.pki.Trust})
	it, _, err := f.inbox.Put(ctx, me, inbox.Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt})
	if err != nil {
		t.Fatal(err)
	}
	code, a := f.call(t, "POST", "getReceivedEdocList", nil, "application/json", "servicetype", "eDoc", "messagetype", "edoc")
	var items []axis.Item
	json.Unmarshal(a.Data, &items)
	if code != 200 || len(items) != 1 || items[0].DocID != string(it.ID) || items[0].From != string(other) || items[0].Status != "initial" || items[0].MessageType != "edoc" {
		t.Fatalf("list: %d %+v %s", code, a, a.Data)
	}
	code, a = f.call(t, "POST", "getEdoc", nil, "application/json", "filePath", "xml", "docId", items[0].DocID)
	var data string
	json.Unmarshal(a.Data, &data)
	pk, _ := base64.StdEncoding.DecodeString(data)
	if p, err := edxml.Parse(bytes.NewReader(pk), edxml.Options{}); code != 200 || a.DocID != items[0].DocID || err != nil || p.Document.Subject != it.Subject {
		t.Fatalf("getEdoc: %d %v", code, err)
	}
	if code, a := f.call(t, "POST", "getEdoc", nil, "application/json", "docId", string(document.NewID(time.Now()))); code != 404 || a.ErrorCode != int(axis.CodeNotFound) {
		t.Fatalf("getEdoc unknown: %d %+v", code, a)
	}
	if code, a := f.call(t, "POST", "updateStatus", nil, "application/json", "status", "fail", "docid", items[0].DocID); code != 200 || a.Status != "OK" {
		t.Fatalf("fail: %d %+v", code, a)
	}
	_, a = f.call(t, "POST", "getReceivedEdocList", nil, "application/json", "messagetype", "edoc")
	json.Unmarshal(a.Data, &items)
	if len(items) != 1 || items[0].Status != "fail" {
		t.Fatalf("after fail: %s", a.Data)
	}
	if code, a := f.call(t, "GET", "countReceiveEdoc", nil, "application/json"); code != 200 || a.Count != 1 {
		t.Fatalf("count: %d %+v", code, a)
	}
	if code, a := f.call(t, "POST", "updateStatus", nil, "application/json", "status", "done", "docId", items[0].DocID); code != 200 || a.Status != "OK" {
		t.Fatalf("done: %d %+v", code, a)
	}
	_, a = f.call(t, "POST", "getReceivedEdocList", nil, "application/json", "messagetype", "edoc")
	if string(a.Data) != "[]" {
		t.Fatalf("after done: %s", a.Data)
	}
	for _, p := range [][]string{{"status", "lost", "docid", items[0].DocID}, {"status", "done"}, {"status", "done", "docid", "nope"}} {
		if code, a := f.call(t, "POST", "updateStatus", nil, "application/json", p...); a.Status != "FAIL" || code == 200 {
			t.Errorf("updateStatus %v: %d %+v", p, code, a)
		}
	}

	// A recipient's status on a document this unit sent, as a status packet.
	_, a = f.call(t, "POST", "sendEdoc", bytes.NewReader(packet(t, me)), "application/octet-stream", "messagetype", "edoc")
	sent := document.ID(a.DocID)
	f.spool.AddStatus(ctx, document.Status{DocumentID: sent, Unit: other, Time: time.Now().UTC(), Code: "03"})
	_, a = f.call(t, "POST", "getReceivedEdocList", nil, "application/json", "messagetype", "status")
	json.Unmarshal(a.Data, &items)
	if len(items) != 1 || items[0].MessageType != "status" || items[0].StatusDesc != "03 accepted" || !strings.HasPrefix(items[0].DocID, string(sent)+"-s") {
		t.Fatalf("statuses: %s", a.Data)
	}
	_, a = f.call(t, "POST", "getEdoc", nil, "application/json", "docId", items[0].DocID)
	json.Unmarshal(a.Data, &data)
	pk, _ = base64.StdEncoding.DecodeString(data)
	rec, _ := f.spool.Get(ctx, sent)
	if sp, err := edxml.ParseStatus(bytes.NewReader(pk), edxml.Limits{}); err != nil || sp.Code != "03" || sp.ResponseFor.DocumentID != rec.EdXMLID {
		t.Fatalf("status packet: %+v %v", sp, err)
	}
	if code, a := f.call(t, "POST", "getReceivedEdocList", nil, "application/json", "messagetype", "fax"); code != 400 || a.Status != "FAIL" {
		t.Fatalf("messagetype fax: %d %+v", code, a)
	}

	_, a = f.call(t, "POST", "getSentEdocList", nil, "application/json")
	var sents []axis.SentItem
	json.Unmarshal(a.Data, &sents)
	if len(sents) != 1 || sents[0].SenderDocID != string(sent) || sents[0].ToCode != string(other) || sents[0].ReceiveStatus != "03" {
		t.Fatalf("sent: %s", a.Data)
	}
	_, a = f.call(t, "POST", "getAgenciesList", nil, "application/json")
	var ags []axis.Agency
	json.Unmarshal(a.Data, &ags)
	if len(ags) != 2 || ags[0].Code != string(me) || ags[0].Name != "UBND" || ags[1].Code != string(other) || ags[1].PID != "000.00.00.H29" {
		t.Fatalf("agencies: %s", a.Data)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(c *Config)
		want   string
	}{
		"valid":          {func(*Config) {}, ""},
		"disabled":       {func(c *Config) { c.Enabled, c.Systems = false, nil }, ""},
		"no systems":     {func(c *Config) { c.Systems = nil }, "systems"},
		"two secrets":    {func(c *Config) { c.Systems[0].SecretEnv = "E" }, "exactly one"},
		"same id twice":  {func(c *Config) { c.Systems = append(c.Systems, c.Systems[0]) }, "twice"},
		"path under v1":  {func(c *Config) { c.Path = "/v1/axis" }, "axis.path"},
		"path slash":     {func(c *Config) { c.Path = "/axis/" }, "axis.path"},
		"path taken":     {func(c *Config) { c.Path = "/metrics" }, "taken"},
		"tiny window":    {func(c *Config) { c.TimestampWindow = time.Second }, "timestamp_window"},
		"bad zone":       {func(c *Config) { c.TimeZone = "Mars/Olympus" }, "time_zone"},
		"no rate":        {func(c *Config) { c.Rate = -1 }, "rate"},
		"tiny requests":  {func(c *Config) { c.MaxRequestBytes = 10 }, "max_request_bytes"},
		"huge list":      {func(c *Config) { c.ListLimit = 1e6 }, "list_limit"},
		"space in an id": {func(c *Config) { c.Systems[0].ID = " x" }, "id"},
	} {
		c := Config{Enabled: true, Systems: []System{{ID: system, SecretFile: "s"}}}
		c.SetDefaults(1 << 20)
		tc.change(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := New(Config{Enabled: true, Path: "/axis", Systems: []System{{ID: system, SecretEnv: "X"}}, TimestampWindow: time.Minute, TimeZone: "UTC",
		MaxRequestBytes: 1 << 20, Rate: 1, Burst: 1, ListLimit: 1}, map[string][]byte{system: []byte("short")}, &packets.Exchange{}, t.TempDir(), nil); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprint(MinSecretLength)) {
		t.Fatalf("short secret: %v", err)
	}
}
