package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/fsinfo"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

const (
	uA = document.UnitID("000.01.00.H29")
	uB = document.UnitID("000.02.00.H29")
	uC = document.UnitID("000.03.00.H29")
)

var bucketSeq struct {
	sync.Mutex
	n int
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a hub on random ports, with its data in a temporary
// directory, a development CA, the embedded NATS server and the shared test
// S3 gateway (a bucket of its own).
func testConfig(t *testing.T) Config {
	t.Helper()
	endpoint, ak, sk := s3embed.ForTest(t)
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("hub-%d-%d", os.Getpid(), bucketSeq.n)
	bucketSeq.Unlock()
	c := Config{Data: t.TempDir()}
	c.HTTP.Listen = "127.0.0.1:0"
	c.NATS.Embedded.Listen = "127.0.0.1:-1"
	c.S3.Archive = archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: bucket}
	c.PKI.CRLPoll = 50 * time.Millisecond
	c.Pipeline.AckWait = 2 * time.Second
	c.Pipeline.MaxBackoff = 200 * time.Millisecond
	return c
}

// running is a hub started with New and served by Run.
type running struct {
	*Hub
	t    *testing.T
	stop func()
}

func startHub(t *testing.T, cfg Config) *running {
	t.Helper()
	h, err := New(t.Context(), cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	r := &running{Hub: h, t: t}
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// api calls the hub's HTTP API with the admin token and decodes the answer
// into out; it returns the status code.
func (r *running) api(method, path string, body, out any) int {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(r.t.Context(), method, r.Info().HTTP+path, rd)
	req.Header.Set("Authorization", "Bearer "+r.AdminToken())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			r.t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
	if resp.StatusCode >= 300 && out != nil {
		r.t.Logf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return resp.StatusCode
}

// agent is a unit as its agent would be: its signer and a NATS connection
// with the credentials the hub issued.
type agent struct {
	t      *testing.T
	id     document.UnitID
	signer *pki.Signer
	creds  []byte
	nc     *nats.Conn
	js     jetstream.JetStream
	closed chan struct{}   // closed when the connection is closed for good
	kept   []jetstream.Msg // fetched while waiting for the other kind
}

// register adds a unit through the API, as edx unit add does, and connects.
func (r *running) register(id document.UnitID) *agent {
	r.t.Helper()
	var b service.UnitBundle
	if code := r.api("POST", "/api/v1/units", service.UnitRequest{ID: id, Name: "Đơn vị " + string(id)}, &b); code != http.StatusCreated {
		r.t.Fatalf("register %s: %d", id, code)
	}
	return r.agentFrom(id, &b)
}

// agentFrom connects with a bundle's credentials; a bundle without a key
// keeps the signer of old.
func (r *running) agentFrom(id document.UnitID, b *service.UnitBundle, old ...*agent) *agent {
	r.t.Helper()
	a := &agent{t: r.t, id: id, creds: []byte(b.Creds)}
	if b.KeyPEM != "" {
		s, err := pki.NewSigner([]byte(b.KeyPEM), []byte(b.CertPEM))
		if err != nil {
			r.t.Fatal(err)
		}
		a.signer = s
	} else if len(old) > 0 {
		a.signer = old[0].signer
	}
	var err error
	if a.nc, a.js, a.closed, err = r.dial(a.creds, id); err != nil {
		r.t.Fatalf("%s connects with its new credentials: %v", id, err)
	}
	return a
}

func (r *running) dial(creds []byte, id document.UnitID) (*nats.Conn, jetstream.JetStream, chan struct{}, error) {
	closed := make(chan struct{})
	nc, js, _, err := protocol.ConnectUnit(r.t.Context(), r.Info().NATSURL, creds, id,
		nats.MaxReconnects(2), nats.ReconnectWait(50*time.Millisecond), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return nil, nil, nil, err
	}
	r.t.Cleanup(nc.Close)
	return nc, js, closed, nil
}

// refused asserts that creds no longer connect.
func (r *running) refused(creds []byte, id document.UnitID, what string) {
	r.t.Helper()
	if nc, _, _, err := r.dial(creds, id); err == nil {
		nc.Close()
		r.t.Fatalf("%s: the old credentials of %s still connect", what, id)
	}
}

func (a *agent) waitClosed(what string) {
	a.t.Helper()
	select {
	case <-a.closed:
	case <-time.After(20 * time.Second):
		a.t.Fatalf("%s: %s's connection with revoked credentials is still open", what, a.id)
	}
}

// send signs a document to the recipients with signer and submits it;
// it returns its id.
func (a *agent) send(signer *pki.Signer, to ...document.UnitID) document.ID {
	a.t.Helper()
	d := document.Template(time.Now())
	d.From, d.To = a.id, to
	d.Subject = "Về việc thu hồi chứng thư số"
	meta, _ := d.Marshal()
	data, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: []byte("%PDF-1.7 " + string(d.ID))}}, signer)
	if err != nil {
		a.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	m := protocol.SubmitMsg(a.id, &protocol.Container{DocumentID: d.ID, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data})
	if _, err := a.js.PublishMsg(a.t.Context(), m); err != nil {
		a.t.Fatal(err)
	}
	return d.ID
}

// notice takes the unit's next notice.
func (a *agent) notice() *protocol.Notice {
	a.t.Helper()
	m := a.next(true)
	n, err := protocol.ParseNotice(&nats.Msg{Data: m.Data()})
	if err != nil {
		a.t.Fatal(err)
	}
	return n
}

// delivery takes the unit's next delivery.
func (a *agent) delivery() *protocol.Delivery {
	a.t.Helper()
	m := a.next(false)
	d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil {
		a.t.Fatal(err)
	}
	return d
}

// next takes the unit's next notice, or delivery, from its consumer;
// messages of the other kind that come first are kept for later.
func (a *agent) next(notice bool) jetstream.Msg {
	a.t.Helper()
	for i, m := range a.kept {
		if protocol.IsNotice(m.Headers()) == notice {
			a.kept = append(a.kept[:i], a.kept[i+1:]...)
			return m
		}
	}
	cons, err := a.js.Consumer(a.t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(a.id)))
	if err != nil {
		a.t.Fatal(err)
	}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
		if err != nil {
			a.t.Fatalf("%s: nothing (notice %v): %v", a.id, notice, err)
		}
		if err := m.DoubleAck(a.t.Context()); err != nil {
			a.t.Fatal(err)
		}
		if protocol.IsNotice(m.Headers()) == notice {
			return m
		}
		a.kept = append(a.kept, m)
	}
}

// eventually polls cond until it holds, failing after a generous timeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s", what)
		}
	}
}

// unitView reads a unit from the API.
func (r *running) unitView(id document.UnitID) service.UnitView {
	r.t.Helper()
	var v service.UnitView
	if code := r.api("GET", "/api/v1/units/"+string(id), nil, &v); code != http.StatusOK {
		r.t.Fatalf("unit %s: %d", id, code)
	}
	return v
}

func hasCode(rs []string, code string) bool {
	for _, r := range rs {
		if strings.HasPrefix(r, code) {
			return true
		}
	}
	return false
}

// TestDataFilesystem: the hub tells what filesystem holds its data
// directory, in its log at start (a warning for an ext4 without a journal)
// and in hub.json, which edx bench reads to print it beside its figures.
func TestDataFilesystem(t *testing.T) {
	cfg := testConfig(t)
	var mu sync.Mutex
	var logged strings.Builder
	log := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	h, err := New(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	want, err := fsinfo.Of(cfg.Data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.Data, "hub.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.DataFS == nil || info.DataFS.String() != want.String() || info.DataFS.Dir != cfg.Data {
		t.Fatalf("hub.json data_fs %+v, want %+v", info.DataFS, want)
	}
	mu.Lock()
	out := logged.String()
	mu.Unlock()
	line := `"msg":"data directory","dir":` + strconv.Quote(cfg.Data)
	if want.Unjournaled() {
		line = `"level":"WARN","msg":"data directory on a filesystem without a journal`
	}
	if !strings.Contains(out, line) || !strings.Contains(out, `"filesystem":`+strconv.Quote(want.String())) {
		t.Fatalf("the log has no %s naming %q:\n%s", line, want, out)
	}
	t.Logf("%s: %s", cfg.Data, want)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
