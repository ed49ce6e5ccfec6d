package pipeline

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/events"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

const (
	uA = document.UnitID("000.01.00.H29")
	uB = document.UnitID("000.02.00.H29")
	uC = document.UnitID("000.03.00.H29")
	uD = document.UnitID("000.04.00.H29")
)

// TestAcceptedDocument: a document from A to B and C is archived
// byte-identical, indexed, delivered once to each, and A's notice carries a
// receipt that verifies.
func TestAcceptedDocument(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.run(e.deps)
	a := e.units[uA]
	id, meta := doc(uA, uB, uC)
	data := a.build(t, meta, 64<<10)
	a.submit(t, id, data)

	n := a.notice(t)
	if n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("notice %+v", n)
	}
	sum := sha256.Sum256(data)
	rr := container.VerifyReceipt(n.Receipt, hex.EncodeToString(sum[:]), container.Options{Trust: e.trust})
	if !rr.Valid {
		t.Fatalf("receipt: %v", rr.Reasons)
	}
	got, obj, err := e.arch.Get(t.Context(), projection.ContainerKey(id))
	if err != nil || !bytes.Equal(got, data) || obj.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("archive: %v, identical=%v", err, bytes.Equal(got, data))
	}
	det, err := e.ix.Get(t.Context(), id)
	if err != nil || len(det.Recipients) != 2 || det.ContainerSHA256 != hex.EncodeToString(sum[:]) || det.Signer.Unit != uA {
		t.Fatalf("index: %v %+v", err, det)
	}
	for _, r := range []document.UnitID{uB, uC} {
		if c := e.deliveries(r); c != 1 {
			t.Errorf("%d deliveries to %s", c, r)
		}
		msg := e.units[r].delivery(t)
		d, err := protocol.ParseDelivery(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
		if err != nil || !bytes.Equal(d.Data, data) || d.Sender != uA || !bytes.Equal(d.Receipt, n.Receipt) {
			t.Fatalf("delivery to %s: %v", r, err)
		}
	}

	// Statuses: B reports 01 then 03; A is told. D, not a recipient, is refused.
	b := e.units[uB]
	for _, code := range []document.StatusCode{document.StatusDelivered, document.StatusAccepted} {
		m, _ := protocol.StatusMsg(&document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC(), Code: code, Description: "Văn thư đã tiếp nhận"})
		if _, err := b.js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		sn := a.notice(t)
		if sn.Type != protocol.NoticeStatus || sn.Status.Code != code || sn.Status.Unit != uB {
			t.Fatalf("status notice %+v", sn)
		}
	}
	d := e.addUnit(uD)
	m, _ := protocol.StatusMsg(&document.Status{DocumentID: id, Unit: uD, Time: time.Now().UTC(), Code: document.StatusDelivered})
	d.js.PublishMsg(t.Context(), m)
	if sn := d.notice(t); sn.Type != protocol.NoticeStatusRejected || !sn.Reasons.Has(reason.RecipientUnknown) {
		t.Fatalf("status from a non-recipient: %+v", sn)
	}
	det, _ = e.ix.Get(t.Context(), id)
	if len(det.History) != 2 || det.Recipients[0].State != index.StateDelivered {
		t.Errorf("history %+v recipients %+v", det.History, det.Recipients)
	}
	if keys := e.objects(projection.StatusPrefix(id)); len(keys) != 2 {
		t.Errorf("archived statuses: %v", keys)
	}
}

// craft builds a signed container around any document.json, valid or not,
// the way a careless or hostile sender could.
func craft(t *testing.T, s *pki.Signer, meta []byte) []byte {
	t.Helper()
	files := map[string][]byte{"document.json": meta, "files/a.pdf": []byte("%PDF-1.7")}
	var man bytes.Buffer
	man.WriteString(`<?xml version="1.0" encoding="UTF-8"?><asic:ASiCManifest xmlns:asic="http://uri.etsi.org/02918/v1.2.1#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><asic:SigReference URI="META-INF/signature001.p7s" MimeType="application/pkcs7-signature"/>`)
	for _, name := range []string{"document.json", "files/a.pdf"} {
		sum := sha256.Sum256(files[name])
		fmt.Fprintf(&man, `<asic:DataObjectReference URI="%s" MimeType="application/octet-stream"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>%s</ds:DigestValue></asic:DataObjectReference>`, name, base64.StdEncoding.EncodeToString(sum[:]))
	}
	man.WriteString(`</asic:ASiCManifest>`)
	sig, err := container.SignDetached(man.Bytes(), s)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	put := func(name string, data []byte, m uint16) {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: name, Method: m})
		w.Write(data)
	}
	put("mimetype", []byte(container.Mimetype), zip.Store)
	put(container.ManifestPath, man.Bytes(), zip.Deflate)
	put(container.SignaturePath, sig, zip.Store)
	put("document.json", meta, zip.Deflate)
	put("files/a.pdf", files["files/a.pdf"], zip.Deflate)
	zw.Close()
	return buf.Bytes()
}

// TestRejectedSubmissions: each bad submission gives the sender a notice with
// its reason code and leaves its reasons under rejected/; the hub goes on.
func TestRejectedSubmissions(t *testing.T) {
	e := newEnv(t, uA, uB, uC, uD)
	e.cfg.Limits = container.DefaultLimits
	e.cfg.Limits.MaxSize = 8 << 20
	// D's certificate is revoked; the hub's trust has the CRL.
	if err := e.ca.Revoke(e.units[uD].signer.Cert().SerialNumber, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := e.trust.LoadCRL(e.ca.CRLPath()); err != nil {
		t.Fatal(err)
	}
	e.run(e.deps)
	a, b := e.units[uA], e.units[uB]

	otherCA, _ := pki.InitCA(t.TempDir(), "Elsewhere")
	okey, _ := pki.GenerateKey(pki.ECDSAP256)
	ocert, _ := otherCA.Issue(pki.IssueRequest{Identifier: string(uA), Name: "impostor", Key: okey.Public()})
	impostor, _ := pki.NewSignerFromKey(okey, []*x509.Certificate{ocert, otherCA.Issuing})
	ekey, _ := pki.GenerateKey(pki.ECDSAP256)
	ecert, _ := e.ca.Issue(pki.IssueRequest{Identifier: string(uA), Name: "expired", Key: ekey.Public(),
		NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(-1, 0, 0)})
	expired, _ := pki.NewSignerFromKey(ekey, []*x509.Certificate{ecert, e.ca.Issuing})

	type sub struct {
		id   document.ID
		data []byte
		edit func(m *nats.Msg)
	}
	mk := func(s *pki.Signer, from document.UnitID, to ...document.UnitID) sub {
		id, meta := doc(from, to...)
		c, err := container.Build(meta, []container.File{{Name: "a.pdf", Data: []byte("%PDF")}}, s)
		if err != nil {
			t.Fatal(err)
		}
		return sub{id: id, data: c}
	}
	accepted := mk(a.signer, uA, uB)
	cases := []struct {
		name string
		sub  func() sub
		want reason.Code
	}{
		{"bad signature", func() sub {
			id, meta := doc(uA, uB)
			u, _ := container.Prepare(meta, []container.File{{Name: "a.pdf", Data: []byte("%PDF")}})
			sig, _ := container.SignDetached(u.Manifest, a.signer)
			sig[len(sig)-3] ^= 1
			data, _ := u.Seal(sig)
			return sub{id: id, data: data}
		}, reason.SignatureInvalid},
		{"untrusted signer", func() sub { return mk(impostor, uA, uB) }, reason.SignatureUntrustedRoot},
		{"expired signer", func() sub { return mk(expired, uA, uB) }, reason.SignatureExpired},
		{"revoked certificate", func() sub {
			id, meta := doc(uA, uB)
			// D's key signing A's document: unit binding fails too, but revocation is reported.
			s := sub{id: id, data: craft(t, e.units[uD].signer, meta)}
			return s
		}, reason.SignatureRevoked},
		{"certificate of another unit", func() sub { id, meta := doc(uA, uB); return sub{id: id, data: craft(t, b.signer, meta)} }, reason.SignatureUnitMismatch},
		{"another unit's document on A's subject", func() sub { return mk(b.signer, uB, uC) }, reason.SenderMismatch},
		{"unknown recipient", func() sub { return mk(a.signer, uA, "000.09.00.H29") }, reason.RecipientUnknown},
		{"malformed container", func() sub {
			b := make([]byte, 3000)
			rand.Read(b)
			return sub{id: document.NewID(time.Now()), data: b}
		}, reason.ContainerMalformed},
		{"oversized", func() sub {
			id, meta := doc(uA, uB)
			return sub{id: id, data: a.build(t, meta, 9<<20)}
		}, reason.ContainerTooLarge},
		{"invalid metadata", func() sub {
			id := document.NewID(time.Now())
			return sub{id: id, data: craft(t, a.signer, []byte(`{"id":"`+string(id)+`","from":"000.01.00.H29","to":[],"subject":""}`))}
		}, reason.MetadataInvalid},
		{"classified", func() sub {
			d := document.Template(time.Now())
			d.From, d.To, d.Confidentiality = uA, []document.UnitID{uB}, document.ConfidentialitySecret
			m, _ := d.Marshal()
			return sub{id: d.ID, data: craft(t, a.signer, m)}
		}, reason.MetadataClassified},
		{"no such staged object", func() sub {
			s := mk(a.signer, uA, uB)
			s.edit = func(m *nats.Msg) {
				m.Header.Set(protocol.HeaderStaged, protocol.SubmitStageName())
				m.Header.Set(protocol.HeaderStageKey, base64.StdEncoding.EncodeToString(make([]byte, protocol.StageKeySize)))
				m.Header.Set(protocol.HeaderStagedSeq, "1")
				m.Data = nil
			}
			return s
		}, reason.SubmissionStaged},
		{"staged object under another key", func() sub {
			s := mk(a.signer, uA, uB)
			s.edit = func(m *nats.Msg) {
				c := &protocol.Container{Data: s.data}
				if err := protocol.UploadStaged(t.Context(), a.js, uA, c); err != nil {
					t.Fatal(err)
				}
				c.StageKey[0] ^= 1
				m.Header.Set(protocol.HeaderStaged, c.Staged)
				m.Header.Set(protocol.HeaderStageKey, base64.StdEncoding.EncodeToString(c.StageKey))
				m.Header.Set(protocol.HeaderStagedSeq, fmt.Sprint(c.StagedSeq))
				m.Data = nil
			}
			return s
		}, reason.SubmissionStaged},
		{"another unit's upload", func() sub {
			// B's upload, with its key, named in A's submission: the hub
			// reads A's uploads only.
			s := mk(a.signer, uA, uB)
			s.edit = func(m *nats.Msg) {
				c := &protocol.Container{Data: s.data}
				if err := protocol.UploadStaged(t.Context(), b.js, uB, c); err != nil {
					t.Fatal(err)
				}
				m.Header.Set(protocol.HeaderStaged, c.Staged)
				m.Header.Set(protocol.HeaderStageKey, base64.StdEncoding.EncodeToString(c.StageKey))
				m.Header.Set(protocol.HeaderStagedSeq, fmt.Sprint(c.StagedSeq))
				m.Data = nil
			}
			return s
		}, reason.SubmissionStaged},
		{"upload missing chunks", func() sub {
			// The first of two chunks only.
			s := mk(a.signer, uA, uB)
			s.edit = func(m *nats.Msg) {
				name := protocol.SubmitStageName()
				cm := nats.NewMsg(protocol.UploadSubject(string(uA)))
				cm.Header.Set(protocol.HeaderUpload, name)
				cm.Header.Set(protocol.HeaderChunk, "0")
				cm.Data = make([]byte, protocol.UploadChunkSize)
				ack, err := a.js.PublishMsg(t.Context(), cm)
				if err != nil {
					t.Fatal(err)
				}
				m.Header.Set(protocol.HeaderSize, fmt.Sprint(protocol.UploadChunkSize+1000))
				m.Header.Set(protocol.HeaderStaged, name)
				m.Header.Set(protocol.HeaderStageKey, base64.StdEncoding.EncodeToString(make([]byte, protocol.StageKeySize)))
				m.Header.Set(protocol.HeaderStagedSeq, fmt.Sprint(ack.Sequence))
				m.Data = nil
			}
			return s
		}, reason.SubmissionStaged},
		{"digest in the message differs", func() sub {
			s := mk(a.signer, uA, uB)
			s.edit = func(m *nats.Msg) { m.Header.Set(protocol.HeaderSHA256, hex.EncodeToString(make([]byte, 32))) }
			return s
		}, reason.SubmissionStaged},
		{"missing headers", func() sub {
			s := mk(a.signer, uA, uB)
			s.edit = func(m *nats.Msg) { m.Header.Del(protocol.HeaderDocID) }
			return s
		}, reason.SubmissionInvalid},
		{"message names another document", func() sub {
			s := mk(a.signer, uA, uB)
			s.id = document.NewID(time.Now())
			return s
		}, reason.SubmissionInvalid},
		{"another container under an accepted id", func() sub {
			id2, meta := doc(uA, uB)
			meta = bytes.Replace(meta, []byte(id2), []byte(accepted.id), 1)
			c, err := container.Build(meta, []container.File{{Name: "khac.pdf", Data: []byte("other")}}, a.signer)
			if err != nil {
				t.Fatal(err)
			}
			return sub{id: accepted.id, data: c}
		}, reason.DocumentConflict},
	}
	a.submit(t, accepted.id, accepted.data)
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("first document: %+v", n)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.sub()
			m := a.submitMsg(t, s.id, s.data)
			if s.edit != nil {
				s.edit(m)
			}
			if _, err := a.js.PublishMsg(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			n := a.notice(t)
			if n.Type != protocol.NoticeRejected || !n.Reasons.Has(tc.want) {
				t.Fatalf("notice %s %v, want rejected with %s", n.Type, n.Reasons.Codes(), tc.want)
			}
			if _, _, err := e.arch.Get(t.Context(), n.ArchiveKey); err != nil {
				t.Fatalf("reasons not archived at %s: %v", n.ArchiveKey, err)
			}
		})
	}
	// The hub goes on with the next message.
	ok := mk(a.signer, uA, uC)
	a.submit(t, ok.id, ok.data)
	if n := a.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != ok.id {
		t.Fatalf("after the rejections: %+v", n)
	}
	rej, err := e.ix.ListRejected(t.Context(), uA, 100)
	if err != nil || len(rej) != len(cases) {
		t.Errorf("index holds %d rejected, want %d (%v)", len(rej), len(cases), err)
	}
}

// TestDuplicateSubmission: the same document submitted twice, past the
// stream's de-duplication (another Msg-Id), gives one archive object, one
// index row, one delivery per recipient and one acceptance notice.
func TestDuplicateSubmission(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.run(e.deps)
	a := e.units[uA]
	id, meta := doc(uA, uB, uC)
	data := a.build(t, meta, 10<<10)
	a.submit(t, id, data)
	first := a.notice(t)
	sum := sha256.Sum256(data)
	m := protocol.SubmitMsg(uA, &protocol.Container{DocumentID: id, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data})
	m.Header.Set(protocol.HeaderMsgID, "retry-after-the-window")
	if _, err := a.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	e.waitIdle()
	e.assertOnce(id, first)
}

// waitIdle waits until the hub's consumer has nothing pending.
func (e *env) waitIdle() {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := e.js.Consumer(e.t.Context(), "EDX_SUBMIT", protocol.HubConsumer)
		if err == nil {
			info, err := c.Info(e.t.Context())
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatal("the hub did not drain its submissions")
}

// assertOnce checks one archive object, one receipt, one delivery per
// recipient and one notice with the first receipt.
func (e *env) assertOnce(id document.ID, first *protocol.Notice) {
	t := e.t
	prefix := projection.DocumentPrefix(id)
	keys := e.objects(prefix)
	if len(keys) != 2 || !contains(keys, "container.asice") || !contains(keys, "receipt.p7s") {
		t.Errorf("archive under %s: %v", prefix, keys)
	}
	// The index has it once, through the decision events, which hold one
	// accepted event for it (a replay publishes the same Nats-Msg-Id).
	page, err := e.ix.Search(t.Context(), index.Query{From: uA, Limit: 100})
	if err != nil || page.Total != 1 {
		t.Errorf("index rows: %d (%v)", page.Total, err)
	}
	if n := e.acceptedEvents(id); n != 1 {
		t.Errorf("%d accepted events for %s", n, id)
	}
	for _, r := range []document.UnitID{uB, uC} {
		if n := e.deliveries(r); n != 1 {
			t.Errorf("%d deliveries to %s", n, r)
		}
	}
	// A consumed its notice: there must be no second one.
	e.units[uA].noNotice(t)
	if n := e.notices(uA); n != 1 {
		t.Errorf("%d notices to A in the stream, want 1", n)
	}
	if first != nil {
		rec, _, err := e.arch.Get(t.Context(), prefix+"receipt.p7s")
		if err != nil || !bytes.Equal(rec, first.Receipt) {
			t.Errorf("the archived receipt is not the one A got (%v)", err)
		}
	}
}

// TestCrashMidway: the hub stops dead after archiving (and, in other runs,
// after publishing the accepted event, after routing, after notifying)
// without acking; a new hub process picks the redelivered message up. The
// document ends archived once, with one accepted event, indexed once
// (through the event), delivered once to each recipient, with one notice. The "crash" abandons the message exactly
// where a killed process would leave it: no ack, no nak, connection closed.
func TestCrashMidway(t *testing.T) {
	for _, step := range []string{"archived", "published", "routed", "notified"} {
		t.Run("after "+step, func(t *testing.T) {
			e := newEnv(t, uA, uB, uC)
			var crashed atomic.Bool
			deps := e.deps
			h := e.hubConn()
			deps.JS, deps.Stage, deps.Events = h.JS, e.stage(h), events.NewPublisher(h.JS, "crashing")
			deps.hook = func(s string) error {
				if s == step && crashed.CompareAndSwap(false, true) {
					return errors.New("crash")
				}
				return nil
			}
			stop := e.runChecked(deps, false)
			a := e.units[uA]
			id, meta := doc(uA, uB, uC)
			a.submit(t, id, a.build(t, meta, 20<<10))
			for deadline := time.Now().Add(30 * time.Second); !crashed.Load(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the hub never reached " + step)
				}
			}
			h.Close() // the dead process's connections go away
			stop()
			e.run(e.deps) // a new hub; the message comes back after AckWait
			var first *protocol.Notice
			first = a.notice(t)
			if first.Type != protocol.NoticeAccepted {
				t.Fatalf("notice %+v", first)
			}
			e.waitIdle()
			e.assertOnce(id, first)
		})
	}
}

// flakyProxy forwards TCP to the S3 gateway and can be switched off, as a
// storage outage looks to the hub.
type flakyProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
			}
			go p.pipe(c)
		}
	}()
	return p
}

func (p *flakyProxy) pipe(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
	c.Close()
}

func (p *flakyProxy) setDown(down bool) {
	p.down.Store(down)
	if down {
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
		p.mu.Unlock()
	}
}

// TestStorageOutage: with S3 unreachable, submissions wait in the stream
// (naked with backoff, none rejected) and drain when it returns.
func TestStorageOutage(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	proxy := newFlakyProxy(t, e.s3cfg.Endpoint)
	cfg := e.s3cfg
	cfg.Endpoint = proxy.ln.Addr().String()
	arch, err := archive.New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	deps := e.deps
	deps.Archive = arch
	e.cfg.MaxBackoff = 500 * time.Millisecond
	proxy.setDown(true)
	e.run(deps)
	a := e.units[uA]
	const n = 5
	ids := map[document.ID]bool{}
	for i := 0; i < n; i++ {
		id, meta := doc(uA, uB, uC)
		ids[id] = true
		a.submit(t, id, a.build(t, meta, 4<<10))
	}
	time.Sleep(3 * time.Second) // several failed attempts
	if n := e.notices(uA); n != 0 {
		t.Fatalf("%d notices during the outage, want none", n)
	}
	proxy.setDown(false)
	for i := 0; i < n; i++ {
		nt := a.notice(t)
		if nt.Type != protocol.NoticeAccepted || !ids[nt.DocumentID] {
			t.Fatalf("after the outage: %+v", nt)
		}
		delete(ids, nt.DocumentID)
	}
	if rej, _ := e.ix.ListRejected(t.Context(), uA, 10); len(rej) != 0 {
		t.Errorf("rejected during the outage: %+v", rej)
	}
}

// TestLargeContainer: a 50 MiB container goes through the object store both
// ways: staged by the sender, staged once by the hub for its recipients.
func TestLargeContainer(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.run(e.deps)
	a := e.units[uA]
	id, meta := doc(uA, uB, uC)
	data := a.build(t, meta, 50<<20)
	a.submit(t, id, data)
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	b := e.units[uB]
	msg := b.delivery(t)
	d, err := protocol.ParseDelivery(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
	if err != nil || d.Staged == "" || len(d.Data) != 0 {
		t.Fatalf("delivery: %v %+v", err, d)
	}
	got, err := protocol.GetStaged(t.Context(), b.stage, d.Staged, d.StageKey, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("staged delivery: %v, identical=%v", err, bytes.Equal(got, data))
	}
	// C's delivery names the same staged object, with the same key.
	cmsg := e.units[uC].delivery(t)
	if cmsg.Headers().Get(protocol.HeaderStaged) != d.Staged {
		t.Errorf("staged twice: %s and %s", d.Staged, cmsg.Headers().Get(protocol.HeaderStaged))
	}
	// What the store holds is ciphertext.
	raw, err := e.deps.Stage.GetBytes(t.Context(), d.Staged)
	if err != nil || bytes.Contains(raw, data[len(data)/2:len(data)/2+64]) {
		t.Fatalf("staged delivery in the clear (%v)", err)
	}
	arch, _, err := e.arch.Get(t.Context(), projection.ContainerKey(id))
	if err != nil || !bytes.Equal(arch, data) {
		t.Fatalf("archive: %v", err)
	}
}

// TestDisabledUnits: a disabled unit's submissions are rejected with
// sender.disabled, documents to it with recipient.disabled; an unknown unit
// is still recipient.unknown.
func TestDisabledUnits(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	e.run(e.deps)
	a, c := e.units[uA], e.units[uC]
	e.putUnit(index.Unit{ID: uC, Name: "Đơn vị " + string(uC), Disabled: true})
	id, meta := doc(uA, uB, uC)
	a.submit(t, id, a.build(t, meta, 1000))
	if n := a.notice(t); n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.RecipientDisabled) || n.Reasons.Has(reason.RecipientUnknown) {
		t.Fatalf("document to a disabled unit: %s %v", n.Type, n.Reasons.Codes())
	}
	id, meta = doc(uC, uA)
	c.submit(t, id, c.build(t, meta, 1000))
	if n := c.notice(t); n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.SenderDisabled) {
		t.Fatalf("document from a disabled unit: %s %v", n.Type, n.Reasons.Codes())
	}
	if e.deliveries(uC) != 0 || e.deliveries(uA) != 0 {
		t.Fatal("a document of a disabled unit was routed")
	}
}

// TestStaleCRLHoldsSubmissions: while the hub's CRL is past its nextUpdate,
// a submission is neither accepted nor rejected: it is naked and retried
// (edx_hub_submissions_held_total counts it); once a current CRL is loaded
// it is accepted.
func TestStaleCRLHoldsSubmissions(t *testing.T) {
	e := newEnv(t, uA, uB)
	crlPath := filepath.Join(t.TempDir(), "crl.pem")
	writeCRL := func(number int64, next time.Time) {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number),
			ThisUpdate: next.Add(-24 * time.Hour), NextUpdate: next}, e.ca.Issuing, issuingKey(t, e.ca))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(crlPath, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
	}
	writeCRL(100, time.Now().Add(-time.Minute))
	if err := e.trust.LoadCRL(crlPath); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e.deps.Metrics = NewMetrics(reg)
	e.cfg.MaxBackoff = 200 * time.Millisecond
	e.run(e.deps)
	a := e.units[uA]
	id, meta := doc(uA, uB)
	a.submit(t, id, a.build(t, meta, 1000))
	held := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "edx_hub_submissions_held_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == string(reason.SignatureCRLStale) {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	for deadline := time.Now().Add(20 * time.Second); held() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the submission was not held and retried")
		}
	}
	if n := e.notices(uA); n != 0 {
		t.Fatalf("%d notices sent while the CRL was stale", n)
	}
	if rej, _ := e.ix.ListRejected(t.Context(), uA, 10); len(rej) != 0 {
		t.Fatalf("rejected for a stale CRL: %+v", rej)
	}
	writeCRL(101, time.Now().Add(24*time.Hour))
	if _, err := e.trust.Refresh(); err != nil {
		t.Fatal(err)
	}
	if n := a.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("after a current CRL: %s %v", n.Type, n.Reasons.Codes())
	}
}

// issuingKey reads the development CA's issuing key, to sign CRLs as a CA
// would.
func issuingKey(t *testing.T, ca *pki.CA) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir, "ca", "issuing.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
