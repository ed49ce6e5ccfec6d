// Package e2e drives the real programs (edx-hub, edx, edx-agent) as a user
// would: built binaries, real ports, real NATS, S3 and SQLite.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var bin string // directory of the built binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edx-e2e-bin")
	if err != nil {
		panic(err)
	}
	bin = dir
	for _, c := range []string{"edx-hub", "edx", "edx-agent"} {
		if _, err := os.Stat(filepath.Join("..", "cmd", c)); err != nil {
			continue
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../cmd/"+c).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", c, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubProc is a running edx-hub process.
type hubProc struct {
	t    *testing.T
	data string
	cmd  *exec.Cmd
	args []string // how it was started (restart)
	env  []string
	info struct {
		NATSURL        string `json:"nats_url"`
		HTTP           string `json:"http"`
		TrustRoots     string `json:"trust_roots"`
		AdminTokenFile string `json:"admin_token_file"`
	}
	log *os.File
}

// startHub runs edx-hub with its embedded defaults on random ports.
func startHub(t *testing.T, data string) *hubProc {
	t.Helper()
	return startHubNATS(t, data, "127.0.0.1:-1")
}

// startHubNATS runs edx-hub with its embedded NATS listening on natsAddr;
// args are further arguments (--config FILE).
func startHubNATS(t *testing.T, data, natsAddr string, args ...string) *hubProc {
	t.Helper()
	return startHubProc(t, data, nil, append([]string{"--data", data, "--http", "127.0.0.1:0", "--nats", natsAddr, "--s3", "127.0.0.1:0"}, args...)...)
}

// startHubProc runs edx-hub with args (and env added to the test's) and
// waits until it is ready.
func startHubProc(t *testing.T, data string, env []string, args ...string) *hubProc {
	t.Helper()
	h := launchHubProc(t, data, env, args...)
	h.await(true)
	return h
}

// launchHubProc runs edx-hub with args (and env added to the test's); it
// does not wait.
func launchHubProc(t *testing.T, data string, env []string, args ...string) *hubProc {
	t.Helper()
	os.Remove(filepath.Join(data, "hub.json"))
	h := &hubProc{t: t, data: data, args: args, env: env}
	var err error
	if err = os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	h.log, err = os.OpenFile(filepath.Join(data, "hub.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(filepath.Join(bin, "edx-hub"), args...)
	if env != nil {
		h.cmd.Env = append(os.Environ(), env...)
	}
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.kill() })
	return h
}

// await waits up to a minute for the hub to have started (DATA/hub.json)
// and, with ready, to answer /readyz with 200.
func (h *hubProc) await(ready bool) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(h.data, "hub.json")); err == nil && json.Unmarshal(b, &h.info) == nil {
			if !ready {
				return
			}
			if resp, err := http.Get(h.info.HTTP + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(h.data, "hub.log"))
			h.t.Fatalf("edx-hub did not become ready:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill stops the hub dead (SIGKILL): no shutdown, no acks.
func (h *hubProc) kill() {
	if h.cmd.ProcessState == nil {
		h.cmd.Process.Signal(syscall.SIGKILL)
		h.cmd.Wait()
	}
}

// stop shuts the hub down gracefully.
func (h *hubProc) stop() {
	if h.cmd.ProcessState == nil {
		h.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { h.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			h.kill()
		}
	}
}

// edx runs the command line and returns its output; want is the exit code.
func edx(t *testing.T, dir string, want int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "edx"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("edx %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	if code != want {
		t.Fatalf("edx %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return string(out)
}

// runHub runs edx-hub to completion (a subcommand) and returns its output.
func runHub(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "edx-hub"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("edx-hub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
