package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// This file drives two agents through the national axis's client protocol
// with a client written here from the protocol's description
// (shared/EDXML.md, "The national axis's client protocol"), not with edx's
// own code: every parameter is sent as an XroadVnpt-<name> header, a JSON
// object of those pairs in XroadVnpt-sign-header, its HMAC-SHA256 (hex,
// keyed with the shared secret) in XroadVnpt-hash-header, the names joined
// by ";" in XroadVnpt-sign-header-key, with timestamp and systemid among
// them. The packets are written here by hand, as a document system would.

// ict is Vietnam's time zone, in which the SDK writes its timestamps.
var ict = time.FixedZone("ICT", 7*3600)

// dms is a document system calling an agent through the axis protocol.
type dms struct {
	t      *testing.T
	url    string // the SDK's endpoint: http://<agent>/axis
	system string
	secret []byte
	mu     sync.Mutex
	last   time.Time
}

type axisAnswer struct {
	Status    string          `json:"status"`
	ErrorCode int             `json:"ErrorCode"`
	ErrorDesc string          `json:"ErrorDesc"`
	DocID     string          `json:"DocId"`
	Data      json.RawMessage `json:"data"`
}

// stamp is a timestamp as the SDK writes it (ddMMyyyy'T'HHmmss+SSSS, the
// milliseconds), one millisecond after the last at least, so that no two
// requests are signed alike.
func (d *dms) stamp() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now().Truncate(time.Millisecond) // the resolution of the timestamp
	if !now.After(d.last) {
		now = d.last.Add(time.Millisecond)
	}
	d.last = now
	now = now.In(ict)
	return now.Format("02012006T150405") + fmt.Sprintf("+%04d", now.Nanosecond()/1e6)
}

// call makes a signed call and reads its answer.
func (d *dms) call(name, ctype string, body []byte, params ...string) (int, axisAnswer) {
	d.t.Helper()
	all := []string{"Content-Type", ctype, "timestamp", d.stamp(), "systemid", d.system}
	all = append(all, params...)
	req, _ := http.NewRequest("POST", d.url+"/"+name, bytes.NewReader(body))
	var js strings.Builder
	var names []string
	js.WriteString("{")
	for i := 0; i+1 < len(all); i += 2 {
		k, _ := json.Marshal("XroadVnpt-" + all[i])
		v, _ := json.Marshal(all[i+1])
		if i > 0 {
			js.WriteString(",")
		}
		js.Write(k)
		js.WriteString(":")
		js.Write(v)
		names = append(names, all[i])
		req.Header.Set("XroadVnpt-"+all[i], all[i+1])
	}
	js.WriteString("}")
	mac := hmac.New(sha256.New, d.secret)
	mac.Write([]byte(js.String()))
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("XroadVnpt-sign-header", js.String())
	req.Header.Set("XroadVnpt-sign-header-key", strings.Join(names, ";"))
	req.Header.Set("XroadVnpt-hash-header", hex.EncodeToString(mac.Sum(nil)))
	return d.do(req)
}

func (d *dms) do(req *http.Request) (int, axisAnswer) {
	d.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a axisAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		d.t.Fatalf("%s: not a JSON answer: %d %q", req.URL.Path, resp.StatusCode, b)
	}
	return resp.StatusCode, a
}

// send sends a document packet as the SDK does: the packet as the body, a
// line break after it, labelled application/octet-stream, with the
// packet's SHA-256 as hash-file.
func (d *dms) send(from document.UnitID, packet []byte) string {
	d.t.Helper()
	sum := sha256.Sum256(packet)
	code, a := d.call("sendEdoc", "application/octet-stream", append(append([]byte{}, packet...), "\r\n"...),
		"from", string(from), "servicetype", "eDoc", "messagetype", "edoc", "hash-file", hex.EncodeToString(sum[:]))
	if code != 200 || a.Status != "OK" || a.ErrorCode != 0 || a.DocID == "" {
		d.t.Fatalf("sendEdoc: %d %+v", code, a)
	}
	return a.DocID
}

// sendStatus sends a status packet as a multipart part file_doc.
func (d *dms) sendStatus(from document.UnitID, packet []byte) string {
	d.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file_doc", "status.edxml")
	fw.Write(packet)
	mw.Close()
	code, a := d.call("sendEdoc", mw.FormDataContentType(), buf.Bytes(), "from", string(from), "servicetype", "eDoc", "messagetype", "status")
	if code != 200 || a.Status != "OK" || a.DocID == "" {
		d.t.Fatalf("sendEdoc (status): %d %+v", code, a)
	}
	return a.DocID
}

type listed struct {
	DocID       string `json:"docId"`
	MessageType string `json:"messageType"`
	From        string `json:"from"`
	Status      string `json:"status"`
	StatusDesc  string `json:"status_desc"`
}

func (d *dms) list(messageType string) []listed {
	d.t.Helper()
	code, a := d.call("getReceivedEdocList", "application/json", nil, "servicetype", "eDoc", "messagetype", messageType)
	if code != 200 || a.Status != "OK" {
		d.t.Fatalf("getReceivedEdocList: %d %+v", code, a)
	}
	var items []listed
	if err := json.Unmarshal(a.Data, &items); err != nil {
		d.t.Fatalf("getReceivedEdocList data: %v %s", err, a.Data)
	}
	return items
}

// fetch gets an item's packet (data: base64).
func (d *dms) fetch(docID string) string {
	d.t.Helper()
	code, a := d.call("getEdoc", "application/json", nil, "filePath", "xml", "docId", docID)
	var data string
	json.Unmarshal(a.Data, &data)
	b, err := base64.StdEncoding.DecodeString(data)
	if code != 200 || a.Status != "OK" || err != nil || len(b) == 0 {
		d.t.Fatalf("getEdoc %s: %d %+v %v", docID, code, a, err)
	}
	return string(b)
}

func (d *dms) ack(docID, status string) {
	d.t.Helper()
	if code, a := d.call("updateStatus", "application/json", nil, "status", status, "docid", docID); code != 200 || a.Status != "OK" {
		d.t.Fatalf("updateStatus %s %s: %d %+v", docID, status, code, a)
	}
}

// await polls a list until pick finds an item.
func (d *dms) await(what, messageType string, pick func(listed) bool, dump ...*agentProc) listed {
	d.t.Helper()
	var got listed
	eventually(d.t, what, 60*time.Second, func() bool {
		for _, it := range d.list(messageType) {
			if pick(it) {
				got = it
				return true
			}
		}
		return false
	}, dump...)
	return got
}

// element returns the text of the first element of that local name.
func element(packet, name string) string {
	m := regexp.MustCompile(`<(?:\w+:)?` + name + `>([^<]*)</`).FindStringSubmatch(packet)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// documentPacket is a document packet as a document system writes it.
func documentPacket(from, to document.UnitID, number, subject string, business int, about string) []byte {
	now := time.Now().In(ict)
	bus := ""
	if about != "" {
		bus = "<edXML:DocumentId>" + about + "</edXML:DocumentId>"
	}
	pdf := base64.StdEncoding.EncodeToString([]byte("%PDF-1.7 " + subject))
	return []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<edXML:edXML xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016">
  <edXML:edXMLEnvelope>
    <edXML:edXMLHeader>
      <edXML:MessageHeader>
        <edXML:From><edXML:OrganId>%[1]s</edXML:OrganId><edXML:OrganName>Sở Tư pháp</edXML:OrganName></edXML:From>
        <edXML:To><edXML:OrganId>%[2]s</edXML:OrganId><edXML:OrganName>Sở Tài chính</edXML:OrganName></edXML:To>
        <edXML:DocumentId>%[1]s,%[3]s,%[4]s/STP-VP</edXML:DocumentId>
        <edXML:Code><edXML:CodeNumber>%[4]s</edXML:CodeNumber><edXML:CodeNotation>STP-VP</edXML:CodeNotation></edXML:Code>
        <edXML:PromulgationInfo><edXML:Place>Thành phố Hồ Chí Minh</edXML:Place><edXML:PromulgationDate>%[3]s</edXML:PromulgationDate></edXML:PromulgationInfo>
        <edXML:DocumentType><edXML:Type>1</edXML:Type><edXML:TypeName>Công văn</edXML:TypeName></edXML:DocumentType>
        <edXML:Subject>%[5]s</edXML:Subject>
        <edXML:SignerInfo><edXML:Competence>TL.</edXML:Competence><edXML:Position>Chánh Văn phòng</edXML:Position><edXML:FullName>Nguyễn Văn A</edXML:FullName></edXML:SignerInfo>
        <edXML:OtherInfo><edXML:Priority>0</edXML:Priority></edXML:OtherInfo>
      </edXML:MessageHeader>
      <edXML:TraceHeaderList>
        <edXML:TraceHeader><edXML:OrganId>%[1]s</edXML:OrganId><edXML:Timestamp>%[6]s</edXML:Timestamp></edXML:TraceHeader>
        <edXML:Bussiness>%[7]s<edXML:BussinessDocType>%[8]d</edXML:BussinessDocType></edXML:Bussiness>
      </edXML:TraceHeaderList>
    </edXML:edXMLHeader>
    <edXML:edXMLBody><edXML:edXMLManifest><edXML:Reference><edXML:AttachmentName>cong-van.pdf</edXML:AttachmentName></edXML:Reference></edXML:edXMLManifest></edXML:edXMLBody>
  </edXML:edXMLEnvelope>
  <edXML:AttachmentEncoded>
    <edXML:Attachment>
      <edXML:ContentId>1</edXML:ContentId>
      <edXML:AttachmentName>cong-van.pdf</edXML:AttachmentName>
      <edXML:ContentType>application/pdf</edXML:ContentType>
      <edXML:ContentTransferEncoded>%[9]s</edXML:ContentTransferEncoded>
    </edXML:Attachment>
  </edXML:AttachmentEncoded>
</edXML:edXML>
`, from, to, now.Format("2006/01/02"), number, subject, now.Format("2006/01/02 15:04:05"), bus, business, pdf))
}

// statusPacket is a status packet as a document system writes it.
func statusPacket(from, docFrom document.UnitID, docID, code, desc string) []byte {
	return []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<edXML:edXML xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016">
  <edXML:edXMLEnvelope>
    <edXML:edXMLHeader>
      <edXML:MessageHeader>
        <edXML:From><edXML:OrganId>%s</edXML:OrganId></edXML:From>
        <edXML:ResponseFor><edXML:OrganId>%s</edXML:OrganId><edXML:DocumentId>%s</edXML:DocumentId></edXML:ResponseFor>
        <edXML:StaffInfo><edXML:Department>Văn thư</edXML:Department><edXML:Staff>Lê Văn C</edXML:Staff><edXML:Email>vanthu@example.gov.vn</edXML:Email></edXML:StaffInfo>
        <edXML:StatusCode>%s</edXML:StatusCode>
        <edXML:Description>%s</edXML:Description>
        <edXML:Timestamp>%s</edXML:Timestamp>
      </edXML:MessageHeader>
    </edXML:edXMLHeader>
  </edXML:edXMLEnvelope>
</edXML:edXML>
`, from, docFrom, docID, code, desc, time.Now().In(ict).Format("2006/01/02 15:04:05")))
}

// axisAgents runs a hub and two agents serving the axis protocol, A's
// document system and B's (B reads edXML in its inbox folder too).
func axisAgents(t *testing.T) (a, b *agentProc, dmsA, dmsB *dms) {
	t.Helper()
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	agent := func(u document.UnitID, system, secret, format string) (*agentProc, *dms) {
		dir := filepath.Join(work, "agent-"+string(u))
		os.MkdirAll(dir, 0o750)
		os.WriteFile(filepath.Join(dir, "axis.secret"), []byte(secret+"\n"), 0o600)
		p := newAgent(t, work, h.info.NATSURL, u, fmt.Sprintf(`dms:
  format: %s
axis:
  enabled: true
  systems:
    - id: %s
      secret_file: %s
`, format, system, filepath.Join(dir, "axis.secret"))).start()
		return p, &dms{t: t, url: p.url + "/axis", system: system, secret: []byte(secret)}
	}
	a, dmsA = agent(uA, "vxp.stp.01", "A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve", "json")
	b, dmsB = agent(uB, "vxp.stc.02", "AwyOIWljooz1hxgZsxpEBjCoj5rg9dMMsLJl0YydfZpd", "edxml")
	return a, b, dmsA, dmsB
}

// TestAxisProtocol: through real NATS, hub and S3, A's document system
// sends an edXML packet through the axis protocol; B's lists it, fetches
// it, acknowledges it and answers 03 with a status packet, which A's reads;
// an update (business type 2) is answered 16 the same way. Unknown calls
// and bad signatures get the protocol's FAIL answers.
func TestAxisProtocol(t *testing.T) {
	a, b, dmsA, dmsB := axisAgents(t)

	// The protocol's refusals, from the real binary.
	if code, ans := dmsA.call("registerEverything", "application/json", nil); code != 404 || ans.Status != "FAIL" || ans.ErrorCode == 0 || ans.ErrorDesc == "" {
		t.Fatalf("unknown call: %d %+v", code, ans)
	}
	forged := &dms{t: t, url: dmsA.url, system: dmsA.system, secret: []byte("not the secret of vxp.stp.01")}
	if code, ans := forged.call("getReceivedEdocList", "application/json", nil, "messagetype", "edoc"); code != 401 || ans.Status != "FAIL" || ans.ErrorCode == 0 {
		t.Fatalf("bad signature: %d %+v", code, ans)
	}
	if code, ans := dmsB.call("getReceivedEdocList", "application/json", nil, "messagetype", "edoc"); code != 200 || ans.Status != "OK" || string(ans.Data) != "[]" {
		t.Fatalf("empty list: %d %+v", code, ans)
	}

	// A sends; B lists, fetches, acknowledges, answers 03.
	p1 := documentPacket(uA, uB, "101", "V/v phối hợp triển khai trục liên thông", 0, "")
	x1 := element(string(p1), "DocumentId")
	id1 := dmsA.send(uA, p1)
	it := dmsB.await("the document in B's list", "edoc", func(l listed) bool { return l.DocID == id1 }, a, b)
	if it.From != string(uA) || it.MessageType != "edoc" || it.Status != "initial" {
		t.Fatalf("listed %+v", it)
	}
	got := dmsB.fetch(id1)
	if element(got, "DocumentId") != x1 || element(got, "Subject") != "V/v phối hợp triển khai trục liên thông" || element(got, "AttachmentName") != "cong-van.pdf" ||
		!strings.Contains(got, base64.StdEncoding.EncodeToString([]byte("%PDF-1.7 V/v phối hợp triển khai trục liên thông"))) {
		t.Fatalf("B's packet:\n%s", got)
	}
	if !strings.Contains(got, "<edXML:OrganId>"+string(uA)+"</edXML:OrganId>") || strings.Count(got, "<edXML:TraceHeader>") != 2 {
		t.Fatalf("B's packet lacks its sender or the hop's trace header:\n%s", got)
	}
	// B's inbox folder holds the packet too (dms.format: edxml).
	if folder, err := os.ReadFile(filepath.Join(b.dir, "data", "inbox", id1, "document.edxml")); err != nil || string(folder) != got {
		t.Fatalf("inbox/%s/document.edxml: %v", id1, err)
	}
	dmsB.ack(id1, "done")
	for _, l := range dmsB.list("edoc") {
		if l.DocID == id1 {
			t.Fatal("acknowledged, and listed again")
		}
	}
	if st := dmsB.sendStatus(uB, statusPacket(uB, uA, element(got, "DocumentId"), "03", "Vào sổ văn bản đến số 125")); st != id1 {
		t.Fatalf("B's status is about %s, want %s", st, id1)
	}
	st := dmsA.await("B's 03 at A", "status", func(l listed) bool { return l.From == string(uB) && strings.HasPrefix(l.StatusDesc, "03") }, a, b)
	sp := dmsA.fetch(st.DocID)
	if element(sp, "StatusCode") != "03" || element(sp, "DocumentId") != x1 || element(sp, "Description") != "Vào sổ văn bản đến số 125" || element(sp, "Staff") != "Lê Văn C" {
		t.Fatalf("A's status packet:\n%s", sp)
	}
	dmsA.ack(st.DocID, "done")

	// An update (business type 2) of the first document, answered 16.
	p2 := documentPacket(uA, uB, "102", "V/v phối hợp triển khai trục liên thông (cập nhật)", 2, x1)
	x2 := element(string(p2), "DocumentId")
	id2 := dmsA.send(uA, p2)
	dmsB.await("the update in B's list", "edoc", func(l listed) bool { return l.DocID == id2 }, a, b)
	got = dmsB.fetch(id2)
	if element(got, "BussinessDocType") != "2" || !strings.Contains(got, "<edXML:DocumentId>"+x1+"</edXML:DocumentId>") {
		t.Fatalf("B's update packet does not name the document it updates:\n%s", got)
	}
	dmsB.ack(id2, "done")
	dmsB.sendStatus(uB, statusPacket(uB, uA, x2, "16", "Không đồng ý cập nhật"))
	st = dmsA.await("B's 16 at A", "status", func(l listed) bool { return l.From == string(uB) && strings.HasPrefix(l.StatusDesc, "16") }, a, b)
	sp = dmsA.fetch(st.DocID)
	if element(sp, "StatusCode") != "16" || element(sp, "DocumentId") != x2 {
		t.Fatalf("A's 16:\n%s", sp)
	}
	// In edx, the update names the first document (in_reply_to).
	if rec := a.document(document.ID(id2)); rec.State != "accepted" {
		t.Fatalf("update %+v", rec)
	}
	code, body := b.do("GET", "/v1/inbox/"+id2, "", nil)
	if code != 200 || !bytes.Contains(body, []byte(`"in_reply_to":"`+id1+`"`)) || !bytes.Contains(body, []byte(`"business_type":2`)) {
		t.Fatalf("B's update: %d %s", code, body)
	}
	// The calls are counted for the operator.
	code, body = a.do("GET", "/metrics", "", nil)
	for _, m := range []string{`edx_agent_axis_calls_total{call="sendEdoc",code="0"} 2`, `edx_agent_axis_calls_total{call="other",code="1"} 1`, `edx_agent_axis_calls_total{call="getReceivedEdocList",code="2"} 1`} {
		if code != 200 || !bytes.Contains(body, []byte(m)) {
			t.Errorf("A's metrics lack %s", m)
		}
	}
}

// TestAxisTakeBack: A's document system takes a document back (status
// 13, sent through the axis protocol as a status packet); B's lists and
// reads the 13, and answers 15, which A's reads.
//
// The hub takes 13 from a document's sender only and passes it to each
// recipient: a status notice (protocol.NoticeStatus on
// edx.notice.<recipient>) carrying the sender's status, which B's agent
// records on the document it received.
func TestAxisTakeBack(t *testing.T) {
	a, b, dmsA, dmsB := axisAgents(t)
	p := documentPacket(uA, uB, "201", "V/v lấy ý kiến dự thảo", 0, "")
	x := element(string(p), "DocumentId")
	id := dmsA.send(uA, p)
	dmsB.await("the document in B's list", "edoc", func(l listed) bool { return l.DocID == id }, a, b)
	dmsB.ack(id, "done")
	if about := dmsA.sendStatus(uA, statusPacket(uA, uA, x, "13", "Lấy lại để sửa trích yếu")); about != id {
		t.Fatalf("A's 13 is about %s, want %s", about, id)
	}
	var take listed
	deadline := time.Now().Add(60 * time.Second)
	for take.DocID == "" {
		for _, l := range dmsB.list("status") {
			if l.From == string(uA) && strings.HasPrefix(l.StatusDesc, "13") {
				take = l
			}
		}
		if take.DocID != "" {
			break
		}
		var refused []string
		for _, line := range strings.Split(a.logText(), "\n") {
			if strings.Contains(line, "refused a status") && strings.Contains(line, "code=13") {
				refused = append(refused, line)
			}
		}
		if len(refused) > 0 || time.Now().After(deadline) {
			var bl []string
			for _, line := range strings.Split(b.logText(), "\n") {
				if !strings.Contains(line, "axis call") {
					bl = append(bl, line)
				}
			}
			t.Fatalf("B never saw A's 13. The hub must accept status 13 from a document's sender and pass it to each recipient "+
				"(a status notice on edx.notice.<recipient>, its Status from the sender); A's agent logged:\n%s\nB's log:\n%s",
				strings.Join(refused, "\n"), strings.Join(bl, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	sp := dmsB.fetch(take.DocID)
	if element(sp, "StatusCode") != "13" || element(sp, "DocumentId") != x || !strings.Contains(sp, "<edXML:OrganId>"+string(uA)+"</edXML:OrganId>") {
		t.Fatalf("B's 13:\n%s", sp)
	}
	dmsB.ack(take.DocID, "done")
	dmsB.sendStatus(uB, statusPacket(uB, uA, element(sp, "DocumentId"), "15", "Đồng ý cho lấy lại"))
	st := dmsA.await("B's 15 at A", "status", func(l listed) bool { return l.From == string(uB) && strings.HasPrefix(l.StatusDesc, "15") }, a, b)
	if sp := dmsA.fetch(st.DocID); element(sp, "StatusCode") != "15" || element(sp, "DocumentId") != x {
		t.Fatalf("A's 15:\n%s", sp)
	}
}
