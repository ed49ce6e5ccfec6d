package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"text/template"

	"gopkg.in/yaml.v3"

	"github.com/edxhub/edx/pkg/document"
)

// The files of a unit's directory (units/<ID>/) that edx unit add writes,
// and that its agent.yaml names (configs/agent.yaml is the same file for
// unit 000.00.00.H29).
const (
	unitKeyFile    = "key.pem"
	unitCertFile   = "cert.pem"
	unitRootsFile  = "roots.pem"
	unitCredsFile  = "nats.creds"
	witnessKeyFile = "witness.key" // the unit's witness key (secret)
	logKeyFile     = "log.vkey"    // the hub log's verifier key
	agentConfig    = "agent.yaml"
	agentTokenFile = "api.token"
	firstAgentPort = 8090
)

// agentTemplate is a unit's agent configuration, ready to run: paths are
// relative to the file's directory, where the agent resolves them.
var agentTemplate = template.Must(template.New(agentConfig).Parse(`# edx-agent configuration for unit {{.Unit}}. Check it with:
#   edx-agent -check -config PATH/OF/THIS/{{.Name}}
# ` + "`edx unit add`" + ` writes this file, ready, beside the unit's key, certificate,
# trust roots and NATS credentials (units/<ID>/{{.Name}}). Relative paths are
# relative to this file's directory. Secrets are read from files or
# environment variables, never from this file or a flag.
unit: {{.Unit}}
data: ./data                        # spool, inbox database, quarantine, default folders

api:
  listen: {{.Listen}}            # the document system's local API; keep it on loopback
  token_file: ./{{.Token}}           # bearer token (at least 16 characters); or token_env: EDX_AGENT_TOKEN

signing:
  # PEM key and certificate chain (leaf first) ...
  key_file: ./{{.Key}}{{if not .HasKey}}                 # not written by edx unit add --cert: put the unit's key here{{end}}
  cert_file: ./{{.Cert}}
  # ... or a PKCS#12 file (leave key_file and cert_file out):
  # pkcs12_file: ./unit.p12
  # pkcs12_password_file: ./unit.p12.pass   # or pkcs12_password_env: EDX_P12_PASSWORD

trust:
  roots: ./{{.Roots}}                # the city's trust roots
  crls: []                          # optional CRL files, read again when they change
  crl_poll: 5s                      # how often the CRL files are checked for a change
  crl_grace: 1h                     # a CRL past its nextUpdate by more: deliveries wait (retried, never quarantined)

nats:
  # The hub's NATS server; on a cluster, its servers, comma-separated
  # (nats://a:4222,nats://b:4222): the agent fails over between them.
  url: {{.NATS}}
  creds_file: ./{{.Creds}}
  creds_warn: 336h                  # warn (log, /readyz) this long before the credentials expire
  keepalive: 2m                     # ping the hub, and ask for a pull heartbeat, this often while quiet (10s-4m);
                                    # longer costs the hub less at rest, and notices a hung hub later (two intervals)

send:
  max_document_bytes: 268435456     # 256 MiB, the hub's limit
  max_backoff: 1m                   # longest wait between attempts while NATS is unreachable
  resubmit_after: 1h                # publish again a document the hub never answered (it de-duplicates)

folders:
  enabled: true                     # outbox/ for systems that cannot call HTTP
  outbox: ./data/outbox             # documents to send: a folder with document.json and files, or a .asice
  sent: ./data/sent
  failed: ./data/failed
  inbox: ./data/inbox               # received documents, one folder each
  interval: 2s

dms:
  format: json                      # json, or edxml: each inbox/<id>/ also holds document.edxml (edXML packets
                                    # are taken and given on the API whatever the format)

axis:                               # the national axis's client protocol, for a DMS built on the axis's SDK
  enabled: false
  path: /axis                       # the SDK's endpoint: http://<api.listen>/axis
  systems:                          # the document systems allowed to call: system id and shared secret
    - id: vxp.saas.03
      secret_file: ./axis.secret    # at least 16 bytes; or secret_env: EDX_AXIS_SECRET
  timestamp_window: 15m             # a request's timestamp within this of the agent's clock; signatures used once
  accept_any_timestamp: false       # true for an SDK object that lives long (it stamps its requests once)
  time_zone: Asia/Ho_Chi_Minh       # of the SDK's timestamps and of the times in answers
  rate: 20                          # calls a second per system, in bursts of up to
  burst: 100
  list_limit: 1000                  # items in one list
  # max_request_bytes: defaults to send.max_document_bytes plus a third (base64)

webhook:
  url: ""                           # e.g. http://127.0.0.1:8000/edx-events; empty: no webhook
  secret_file: ""                   # signs events: X-Edx-Signature: sha256=HMAC
  timeout: 10s
  max_attempts: 10

witness:                            # the agent witnesses every hub's transparency log: checks every checkpoint, cosigns it
  key_file: ./{{.Witness}}           # the unit's witness key (secret; its public half is in the hubs' unit registry)
  log_key_file: ./{{.LogKey}}          # the hubs' log keys, one a line (edx unit add/rotate write them); a hub that joins
                                    # later is learned from its key statement signed by a hub certificate under trust.roots
  poll: 5m                          # how often each log's newest checkpoint is asked for, besides those the hubs offer

log:
  level: info                       # debug, info, warn, error
  format: text                      # text or json
`))

// agentParams fill agentTemplate.
type agentParams struct {
	Unit                                 document.UnitID
	NATS, Listen                         string
	HasKey                               bool
	Name, Key, Cert, Roots, Creds, Token string
	Witness, LogKey                      string
}

func renderAgentConfig(unit document.UnitID, natsURL, listen string, hasKey bool) []byte {
	var b bytes.Buffer
	agentTemplate.Execute(&b, agentParams{Unit: unit, NATS: natsURL, Listen: listen, HasKey: hasKey,
		Name: agentConfig, Key: unitKeyFile, Cert: unitCertFile, Roots: unitRootsFile, Creds: unitCredsFile, Token: agentTokenFile,
		Witness: witnessKeyFile, LogKey: logKeyFile})
	return b.Bytes()
}

// writeAgentConfig writes dir/agent.yaml for unit and, beside it, a new API
// token (api.token, 0600). An agent.yaml or api.token already there is kept:
// it may be in use. listen "" picks a free loopback port (freeAgentListen).
// It reports what it wrote and what it kept.
func writeAgentConfig(dir string, unit document.UnitID, natsURL, listen string, hasKey bool) (wrote, kept []string, addr string, err error) {
	cfg := filepath.Join(dir, agentConfig)
	if _, err := os.Stat(cfg); err == nil {
		kept = append(kept, agentConfig)
	} else {
		if listen == "" {
			if listen, err = freeAgentListen(filepath.Dir(dir)); err != nil {
				return nil, nil, "", err
			}
		}
		if err := writeNew(cfg, renderAgentConfig(unit, natsURL, listen, hasKey), 0o644); err != nil {
			return nil, nil, "", err
		}
		wrote, addr = append(wrote, agentConfig), listen
	}
	tok := filepath.Join(dir, agentTokenFile)
	if _, err := os.Stat(tok); err == nil {
		kept = append(kept, agentTokenFile)
	} else {
		if err := writeNew(tok, []byte(rand.Text()+"\n"), 0o600); err != nil {
			return nil, nil, "", err
		}
		wrote = append(wrote, agentTokenFile)
	}
	return wrote, kept, addr, nil
}

// writeNew creates a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// freeAgentListen picks the API address of a new unit's agent: the first
// loopback port from 8090 that no other agent.yaml under units (the units'
// parent directory) uses and that is free now, so that the walk-through's
// agents run side by side.
func freeAgentListen(units string) (string, error) {
	used := map[int]bool{}
	ents, err := os.ReadDir(units)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(units, e.Name(), agentConfig))
		if err != nil {
			continue
		}
		var c struct {
			API struct {
				Listen string `yaml:"listen"`
			} `yaml:"api"`
		}
		if yaml.Unmarshal(b, &c) != nil {
			continue
		}
		if _, p, err := net.SplitHostPort(c.API.Listen); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				used[n] = true
			}
		}
	}
	for port := firstAgentPort; port < firstAgentPort+1000; port++ {
		if used[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr, nil
	}
	return "", fmt.Errorf("no free port from %d to %d for the agent's API: pass --agent-listen", firstAgentPort, firstAgentPort+999)
}

// unitAgentConfig writes the agent's configuration of a unit just added
// and says how to run it.
func unitAgentConfig(e *env, dir string, u document.UnitID, natsURL, listen string, hasKey bool) int {
	wrote, kept, addr, err := writeAgentConfig(dir, u, natsURL, listen, hasKey)
	if err != nil {
		return fail(e, "agent configuration: %v", err)
	}
	cfg := filepath.Join(dir, agentConfig)
	for _, f := range wrote {
		switch f {
		case agentConfig:
			fmt.Fprintf(e.stdout, "  agent: %s (API on %s)\n", cfg, addr)
		case agentTokenFile:
			fmt.Fprintf(e.stdout, "  agent API token: %s (keep it secret)\n", filepath.Join(dir, f))
		}
	}
	for _, f := range kept {
		fmt.Fprintf(e.stdout, "  kept the existing %s\n", filepath.Join(dir, f))
	}
	if !hasKey {
		fmt.Fprintf(e.stdout, "  put the unit's private key in %s before starting its agent\n", filepath.Join(dir, unitKeyFile))
	}
	fmt.Fprintf(e.stdout, "  run its agent: edx-agent -config %s\n", cfg)
	return exitOK
}
