package main

import (
	"crypto/rand"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/agent"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

var update = flag.Bool("update", false, "rewrite configs/agent.yaml from the template edx unit add uses")

// TestAgentConfigExample: configs/agent.yaml is what edx unit add writes
// for unit 000.00.00.H29, so the example and the real files agree on every
// name. go test ./cmd/edx -run TestAgentConfigExample -update rewrites it.
func TestAgentConfigExample(t *testing.T) {
	want := renderAgentConfig("000.00.00.H29", "nats://127.0.0.1:4222", "127.0.0.1:8090", true)
	const example = "../../configs/agent.yaml"
	if *update {
		if err := os.WriteFile(example, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s differs from what edx unit add writes (go test ./cmd/edx -run TestAgentConfigExample -update):\n%s", example, want)
	}
}

// TestWriteAgentConfig: the configuration edx unit add writes passes the
// agent's own check, unchanged, from any working directory; a second unit
// gets another port; an existing configuration and token are kept.
func TestWriteAgentConfig(t *testing.T) {
	work := t.TempDir()
	ca, err := pki.InitCA(filepath.Join(work, "pki"), "")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := broker.LoadOrCreateKeys(filepath.Join(work, "nats-keys"))
	if err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(work, "units")
	var addrs []string
	for _, u := range []string{"000.01.00.H29", "000.02.00.H29"} {
		dir := filepath.Join(units, u)
		os.MkdirAll(dir, 0o700)
		kp, cp, err := ca.IssueUnit(docUnit(u), "Đơn vị", pki.ECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		for src, dst := range map[string]string{kp: unitKeyFile, cp: unitCertFile, ca.RootsPath(): unitRootsFile} {
			b, _ := os.ReadFile(src)
			os.WriteFile(filepath.Join(dir, dst), b, 0o600)
		}
		creds, err := keys.IssueUnitCreds(u, time.Hour) // the agent reads their expiry
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, unitCredsFile), creds, 0o600)
		// What edx unit add writes besides: the witness key, the log's key.
		if _, made, err := ensureWitnessKey(dir, docUnit(u)); err != nil || !made {
			t.Fatalf("witness key: %v", err)
		}
		_, logKey, _ := note.GenerateKey(rand.Reader, "edx.local/hub-log")
		os.WriteFile(filepath.Join(dir, logKeyFile), []byte(logKey+"\n"), 0o644)
		wrote, kept, addr, err := writeAgentConfig(dir, docUnit(u), "nats://127.0.0.1:4222", "", true)
		if err != nil || len(wrote) != 2 || len(kept) != 0 || addr == "" {
			t.Fatalf("wrote %v, kept %v, addr %q: %v", wrote, kept, addr, err)
		}
		addrs = append(addrs, addr)
		if fi, err := os.Stat(filepath.Join(dir, agentTokenFile)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("token file: %v", err)
		}
		t.Chdir(t.TempDir())
		c, err := agent.LoadConfig(filepath.Join(dir, agentConfig))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetDefaults(); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Check(); err != nil {
			t.Fatal(err)
		}
		if c.Witness.KeyFile != filepath.Join(dir, witnessKeyFile) || c.Witness.LogKeyFile != filepath.Join(dir, logKeyFile) {
			t.Fatalf("witness: %+v", c.Witness)
		}
		if string(c.Unit) != u || c.API.Listen != addr || c.Data != filepath.Join(dir, "data") || c.Folders.Outbox != filepath.Join(dir, "data", "outbox") {
			t.Fatalf("%+v", c)
		}
	}
	if addrs[0] == addrs[1] {
		t.Fatalf("two agents on %s", addrs[0])
	}
	dir := filepath.Join(units, "000.01.00.H29")
	before, _ := os.ReadFile(filepath.Join(dir, agentConfig))
	tok, _ := os.ReadFile(filepath.Join(dir, agentTokenFile))
	wrote, kept, _, err := writeAgentConfig(dir, "000.01.00.H29", "nats://other:4222", "127.0.0.1:9999", true)
	after, _ := os.ReadFile(filepath.Join(dir, agentConfig))
	tok2, _ := os.ReadFile(filepath.Join(dir, agentTokenFile))
	if err != nil || len(wrote) != 0 || len(kept) != 2 || string(before) != string(after) || string(tok) != string(tok2) {
		t.Fatalf("second write: wrote %v, kept %v, %v", wrote, kept, err)
	}
	// Without a key (edx unit add --cert), the file says where it goes.
	if b := renderAgentConfig("000.03.00.H29", "nats://x:4222", "127.0.0.1:8090", false); !strings.Contains(string(b), "put the unit's key here") {
		t.Fatalf("%s", b)
	}
}

func docUnit(s string) document.UnitID { return document.UnitID(s) }
