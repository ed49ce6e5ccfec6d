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
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream is a national axis simulated from the protocol's description
// (shared/EDXML.md, "The national axis's client protocol"), written here
// without edx's code (pkg/axis): each call is a POST to /<call> whose
// parameters are XroadVnpt-<name> headers, authenticated by the HMAC-SHA256
// (hex, keyed with the system's shared secret) of the XroadVnpt-sign-header
// string as received, its names in XroadVnpt-sign-header-key; answers are
// JSON with status, ErrorCode, ErrorDesc, DocId and data.
//
// It routes what a system sends (sendEdoc; the to parameter names the
// recipients) to the system that serves each recipient's code, lists it
// for that system (getReceivedEdocList, by messagetype) until it
// acknowledges it done (updateStatus), gives its packet in base64
// (getEdoc), and lists what a system sent (getSentEdocList). Like peer
// axes, it refuses an exact duplicate status. It keeps every message it
// took, so that a test counts them.
//
// Faults: down answers every call by closing the connection; cut[call]
// makes the next calls of that name take effect and then lose their answer
// (the connection closes mid-transfer: getEdoc's after part of the data).
type upstream struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	systems map[string]*upSystem
	seen    map[string]bool // signatures taken
	msgs    []*upMsg
	items   []*upItem
	n       int
	down    bool
	cut     map[string]int
	calls   map[string]int
}

type upSystem struct {
	id     string
	secret []byte
	serves func(code string) bool
}

// upMsg is one message a system sent: a document or a status.
type upMsg struct {
	id      string
	kind    string // edoc or status
	system  string
	from    string
	to      []string
	packet  []byte
	sent    time.Time
	subject string // the packet's Subject or StatusCode
	code    string // the packet's Code (number/notation)
}

// upItem is a message listed for one recipient's system.
type upItem struct {
	id     string
	msg    *upMsg
	to     string
	system string
	status string // initial, processing, fail, done
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{t: t, systems: map[string]*upSystem{}, seen: map[string]bool{}, cut: map[string]int{}, calls: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addSystem(id, secret string, serves func(string) bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.systems[id] = &upSystem{id: id, secret: []byte(secret), serves: serves}
}

func (u *upstream) setDown(down bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.down = down
}

func (u *upstream) cutNext(call string, n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cut[call] += n
}

func (u *upstream) callCount(call string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[call]
}

// sentBy returns the messages a system sent of a kind.
func (u *upstream) sentBy(system, kind string) []*upMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []*upMsg
	for _, m := range u.msgs {
		if m.system == system && m.kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// pending counts the items listed for a system not yet acknowledged done.
func (u *upstream) pending(system string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, it := range u.items {
		if it.system == system && it.status != "done" {
			n++
		}
	}
	return n
}

type upAnswer struct {
	Status    string `json:"status"`
	ErrorCode int    `json:"ErrorCode"`
	ErrorDesc string `json:"ErrorDesc"`
	DocID     string `json:"DocId,omitempty"`
	Data      any    `json:"data,omitempty"`
}

func upFail(w http.ResponseWriter, httpStatus, code int, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	json.NewEncoder(w).Encode(upAnswer{Status: "FAIL", ErrorCode: code, ErrorDesc: desc})
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// authenticate checks a call's signature and returns its parameters.
func (u *upstream) authenticate(r *http.Request) (*upSystem, map[string]string, string) {
	raw := r.Header.Get("XroadVnpt-sign-header")
	hash := strings.ToLower(strings.TrimSpace(r.Header.Get("XroadVnpt-hash-header")))
	keys := r.Header.Get("XroadVnpt-sign-header-key")
	if raw == "" || hash == "" || keys == "" {
		return nil, nil, "missing signature headers"
	}
	var signed map[string]string
	if err := json.Unmarshal([]byte(raw), &signed); err != nil {
		return nil, nil, "the sign header is not a JSON object of strings"
	}
	params := map[string]string{}
	for _, k := range strings.Split(keys, ";") {
		v, ok := signed["XroadVnpt-"+k]
		if !ok || r.Header.Get("XroadVnpt-"+k) != v {
			return nil, nil, "parameter " + k + " is not signed as sent"
		}
		params[strings.ToLower(k)] = v
	}
	if len(params) != len(signed) {
		return nil, nil, "the key list does not name every signed parameter"
	}
	sys := u.systems[params["systemid"]]
	if sys == nil {
		return nil, nil, "unknown system"
	}
	mac := hmac.New(sha256.New, sys.secret)
	mac.Write([]byte(raw))
	if !hmac.Equal([]byte(hash), []byte(hex.EncodeToString(mac.Sum(nil)))) {
		return nil, nil, "wrong hash"
	}
	ts := params["timestamp"]
	if len(ts) != 20 || ts[8] != 'T' || ts[15] != '+' {
		return nil, nil, "timestamp not ddMMyyyy'T'HHmmss+SSSS"
	}
	at, err := time.ParseInLocation("02012006T150405", ts[:15], ict)
	if err != nil || time.Since(at).Abs() > 15*time.Minute {
		return nil, nil, "timestamp outside the window"
	}
	if u.seen[hash] {
		return nil, nil, "signature used before"
	}
	u.seen[hash] = true
	return sys, params, ""
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	call := path.Base(r.URL.Path)
	u.mu.Lock()
	u.calls[call]++
	if u.down {
		u.mu.Unlock()
		drop(w)
		return
	}
	sys, params, why := u.authenticate(r)
	if why != "" {
		u.mu.Unlock()
		upFail(w, http.StatusUnauthorized, 2, why)
		return
	}
	cut := u.cut[call] > 0
	if cut {
		u.cut[call]--
	}
	u.mu.Unlock()

	var ans upAnswer
	switch call {
	case "sendEdoc":
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			drop(w)
			return
		}
		var ok bool
		if ans, ok = u.sendEdoc(w, r, sys, params, body); !ok {
			return
		}
	case "getReceivedEdocList":
		ans = u.list(sys, params["messagetype"])
	case "getSentEdocList":
		ans = u.sentList(sys)
	case "getEdoc":
		u.mu.Lock()
		it := u.item(sys, params["docid"])
		u.mu.Unlock()
		if it == nil {
			upFail(w, http.StatusOK, 5, "no such document")
			return
		}
		data := base64.StdEncoding.EncodeToString(it.msg.packet)
		head := fmt.Sprintf(`{"status":"OK","ErrorCode":0,"ErrorDesc":"Thành công","DocId":%q,"data":"`, it.id)
		w.Header().Set("Content-Type", "application/json")
		if cut {
			// Mid-transfer: half the data, then the connection goes.
			w.Header().Set("Content-Length", strconv.Itoa(len(head)+len(data)+2))
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, head+data[:len(data)/2])
			w.(http.Flusher).Flush()
			drop(w)
			return
		}
		io.WriteString(w, head+strings.ReplaceAll(data, "/", `\/`)+`"}`) // as Java's JSON writers escape /
		return
	case "updateStatus":
		u.mu.Lock()
		it := u.item(sys, params["docid"])
		if it != nil {
			it.status = params["status"]
		}
		u.mu.Unlock()
		if it == nil {
			upFail(w, http.StatusOK, 5, "no such document")
			return
		}
		ans = upAnswer{Status: "OK", ErrorDesc: "Thành công", DocID: it.id}
	default:
		upFail(w, http.StatusNotFound, 1, "unknown call")
		return
	}
	if cut {
		drop(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ans)
}

// item finds an item listed for a system (u.mu held).
func (u *upstream) item(sys *upSystem, id string) *upItem {
	for _, it := range u.items {
		if it.id == id && it.system == sys.id {
			return it
		}
	}
	return nil
}

// sendEdoc takes a packet: the body as the SDK sends it (the packet and a
// line break), or a multipart part file_doc.
func (u *upstream) sendEdoc(w http.ResponseWriter, r *http.Request, sys *upSystem, params map[string]string, body []byte) (upAnswer, bool) {
	packet := body
	if mt, mp, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "multipart/form-data" {
		mr := multipart.NewReader(bytes.NewReader(body), mp["boundary"])
		packet = nil
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "file_doc" {
				packet, _ = io.ReadAll(p)
			}
		}
	} else {
		packet = bytes.TrimSuffix(packet, []byte("\r\n"))
	}
	if len(packet) == 0 {
		upFail(w, http.StatusOK, 4, "no packet")
		return upAnswer{}, false
	}
	if h := params["hash-file"]; h != "" {
		sum := sha256.Sum256(packet)
		var sdk strings.Builder
		for _, c := range sum {
			sdk.WriteString(strconv.FormatUint(uint64(c), 16))
		}
		if h != hex.EncodeToString(sum[:]) && h != sdk.String() {
			upFail(w, http.StatusOK, 2, "hash-file does not match the packet")
			return upAnswer{}, false
		}
	}
	from := params["from"]
	if !sys.serves(from) {
		upFail(w, http.StatusOK, 6, "system "+sys.id+" does not send for "+from)
		return upAnswer{}, false
	}
	var to []string
	if err := json.Unmarshal([]byte(params["to"]), &to); err != nil {
		var one string
		if json.Unmarshal([]byte(params["to"]), &one) != nil || one == "" {
			upFail(w, http.StatusOK, 4, "to: want the recipients' codes")
			return upAnswer{}, false
		}
		to = []string{one}
	}
	kind := params["messagetype"]
	m := &upMsg{kind: kind, system: sys.id, from: from, to: to, packet: packet, sent: time.Now()}
	if kind == "status" {
		m.subject = element(string(packet), "StatusCode")
	} else {
		m.subject = element(string(packet), "Subject")
		m.code = strings.Trim(element(string(packet), "CodeNumber")+"/"+element(string(packet), "CodeNotation"), "/")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if kind == "status" {
		for _, o := range u.msgs {
			if o.kind == "status" && o.system == sys.id && bytes.Equal(o.packet, packet) {
				upFail(w, http.StatusOK, 7, "duplicate status")
				return upAnswer{}, false
			}
		}
	}
	var targets []*upSystem
	for _, code := range to {
		var target *upSystem
		for _, s := range u.systems {
			if s.serves(code) {
				target = s
			}
		}
		if target == nil {
			upFail(w, http.StatusOK, 6, "unknown recipient "+code)
			return upAnswer{}, false
		}
		targets = append(targets, target)
	}
	u.n++
	m.id = fmt.Sprintf("vdxp-%06d", u.n)
	u.msgs = append(u.msgs, m)
	for i, code := range to {
		u.items = append(u.items, &upItem{id: fmt.Sprintf("%s.%d", m.id, i+1), msg: m, to: code, system: targets[i].id, status: "initial"})
	}
	return upAnswer{Status: "OK", ErrorDesc: "Thành công", DocID: m.id}, true
}

type upListed struct {
	DocID       string `json:"docId"`
	ServiceType string `json:"serviceType"`
	MessageType string `json:"messageType"`
	Created     string `json:"created_time"`
	Updated     string `json:"updated_time"`
	From        string `json:"from"`
	To          string `json:"to"`
	Status      string `json:"status"`
	StatusDesc  string `json:"status_desc"`
}

func (u *upstream) list(sys *upSystem, kind string) upAnswer {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := []upListed{}
	for _, it := range u.items {
		if it.system == sys.id && it.msg.kind == kind && it.status != "done" {
			t := it.msg.sent.In(ict).Format(time.RFC3339)
			out = append(out, upListed{DocID: it.id, ServiceType: "eDoc", MessageType: kind, Created: t, Updated: t,
				From: it.msg.from, To: it.to, Status: it.status})
		}
	}
	return upAnswer{Status: "OK", ErrorDesc: "Thành công", Data: out}
}

type upSent struct {
	ServiceType string `json:"serviceType"`
	MessageType string `json:"messageType"`
	SenderDocID string `json:"senderDocId"`
	FromCode    string `json:"fromCode"`
	ToCode      string `json:"toCode"`
	Title       string `json:"title"`
	Notation    string `json:"notation"`
	SentTime    string `json:"sentTime"`
}

func (u *upstream) sentList(sys *upSystem) upAnswer {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := []upSent{}
	for _, m := range u.msgs {
		if m.system != sys.id || m.kind != "edoc" {
			continue
		}
		for _, to := range m.to {
			out = append(out, upSent{ServiceType: "eDoc", MessageType: "edoc", SenderDocID: m.id, FromCode: m.from, ToCode: to,
				Title: m.subject, Notation: m.code, SentTime: m.sent.In(ict).Format(time.RFC3339)})
		}
	}
	return upAnswer{Status: "OK", ErrorDesc: "Thành công", Data: out}
}
