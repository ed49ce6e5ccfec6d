package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/edxhub/edx/agent"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/document"
)

// TestNewcomerPath: what someone new to edx does, with the real binaries.
// edx unit add writes an agent configuration that edx-agent checks and runs
// unchanged, from another directory; with that agent running, edx send as
// the same unit gets its own answer (the agent no longer takes it) while
// the agent still records its own documents' acceptance; a missing id is
// filled; a reused id, another unit's credentials, credentials the hub
// never issued and a stopped hub each say what happened and what to do.
func TestNewcomerPath(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	out := edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(uA), "--name", "Sở Nội vụ")
	if !strings.Contains(out, filepath.Join("units", string(uA), "agent.yaml")) || !strings.Contains(out, "edx-agent -config") {
		t.Fatalf("unit add:\n%s", out)
	}
	edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(uB), "--name", "Sở Tài chính",
		"--agent-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)))

	// The agent's configuration, unchanged, checked and run from elsewhere.
	cfgPath := filepath.Join(work, "units", string(uA), "agent.yaml")
	check := exec.Command(filepath.Join(bin, "edx-agent"), "-check", "-config", cfgPath)
	check.Dir = t.TempDir()
	if b, err := check.CombinedOutput(); err != nil || !strings.Contains(string(b), "configuration OK (unit "+string(uA)+")") {
		t.Fatalf("edx-agent -check: %v\n%s", err, b)
	}
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL != h.info.NATSURL || cfg.Unit != uA {
		t.Fatalf("agent.yaml: nats %s, unit %s", cfg.NATS.URL, cfg.Unit)
	}
	tok, err := os.ReadFile(filepath.Join(work, "units", string(uA), "api.token"))
	if err != nil {
		t.Fatal(err)
	}
	a := &agentProc{t: t, unit: uA, dir: filepath.Dir(cfgPath), url: "http://" + cfg.API.Listen, token: strings.TrimSpace(string(tok))}
	a.start()

	send := func(want int, meta string, args ...string) string {
		t.Helper()
		ua := filepath.Join("units", string(uA))
		base := []string{"send", "--nats", h.info.NATSURL, "--creds", filepath.Join(ua, "nats.creds"),
			"--key", filepath.Join(ua, "key.pem"), "--cert", filepath.Join(ua, "cert.pem"), "--meta", meta, "--timeout", "90s"}
		return edx(t, work, want, append(append(base, args...), "quyet-dinh.pdf")...)
	}
	os.WriteFile(filepath.Join(work, "quyet-dinh.pdf"), []byte("%PDF-1.7 quyết định"), 0o644)
	var d map[string]any
	json.Unmarshal([]byte(edx(t, work, 0, "template", "--from", string(uA))), &d)
	d["to"] = []string{string(uB)}
	delete(d, "id")
	b, _ := json.MarshalIndent(d, "", "  ")
	os.WriteFile(filepath.Join(work, "noid.json"), b, 0o644)

	// The agent's own document, then edx send as the same unit, twice,
	// then the agent again: every answer reaches who asked.
	for round := range 2 {
		code, id, body := a.post(uB)
		if code != 202 {
			t.Fatalf("agent post: %d %s", code, body)
		}
		out := send(0, "noid.json")
		m := regexp.MustCompile(`document id (\S+) \(filled in: noid.json has none\)`).FindStringSubmatch(out)
		if m == nil || !strings.Contains(out, "accepted at") || !strings.Contains(out, "sent "+m[1]) {
			t.Fatalf("round %d: edx send with an agent running:\n%s", round, out)
		}
		if _, err := os.Stat(filepath.Join(work, m[1]+".receipt.p7s")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the agent's acceptance", 60*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
	}

	// A template's id sent twice: the hub's refusal, with what to do.
	d["id"] = string(document.NewID(time.Now()))
	b, _ = json.MarshalIndent(d, "", "  ")
	os.WriteFile(filepath.Join(work, "doc.json"), b, 0o644)
	send(0, "doc.json")
	out = send(1, "doc.json")
	if !strings.Contains(out, "document.conflict") || !strings.Contains(out, `remove its "id" line`) {
		t.Fatalf("reused id:\n%s", out)
	}

	// Another unit's credentials: refused before connecting.
	ub := filepath.Join("units", string(uB))
	ua := filepath.Join("units", string(uA))
	out = edx(t, work, 2, "send", "--nats", h.info.NATSURL, "--creds", filepath.Join(ub, "nats.creds"),
		"--key", filepath.Join(ua, "key.pem"), "--cert", filepath.Join(ua, "cert.pem"), "--meta", "noid.json", "quyet-dinh.pdf")
	if !strings.Contains(out, "issued for unit "+string(uB)) || !strings.Contains(out, "cannot connect unit "+string(uA)) {
		t.Fatalf("another unit's credentials:\n%s", out)
	}
	// Credentials for the right unit that this hub never issued.
	os.WriteFile(filepath.Join(work, "foreign.creds"), foreignCreds(t, uA), 0o600)
	out = edx(t, work, 2, "send", "--nats", h.info.NATSURL, "--creds", "foreign.creds",
		"--key", filepath.Join(ua, "key.pem"), "--cert", filepath.Join(ua, "cert.pem"), "--meta", "noid.json", "quyet-dinh.pdf")
	if !strings.Contains(out, "NATS refused the credentials for unit "+string(uA)+" (authorization violation): check --creds foreign.creds") {
		t.Fatalf("foreign credentials:\n%s", out)
	}
	// The hub stopped.
	a.stop()
	h.stop()
	out = send(2, "noid.json")
	if !strings.Contains(out, "cannot reach NATS at "+h.info.NATSURL) || !strings.Contains(out, "is the hub running?") {
		t.Fatalf("hub stopped:\n%s", out)
	}
}

// foreignCreds are well-formed credentials for unit, signed by an account
// no hub trusts.
func foreignCreds(t *testing.T, unit document.UnitID) []byte {
	t.Helper()
	akp, _ := nkeys.CreateAccount()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = string(unit)
	tok, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(tok, useed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}
