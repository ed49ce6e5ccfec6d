package s3embed

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ForTest returns the endpoint and credentials of a gateway shared by every
// test in the process, starting it on first use. Each caller should use its
// own bucket. If the gateway cannot start, ForTest fails the test: a missing
// S3 server is an error, never a reason to skip.
//
// The gateway runs in a helper process (this test binary, re-executed), not
// in the test process: versitygw's posix backend changes the working
// directory of the process it runs in, which would break every relative path
// (testdata/ and golden files) in the tests that use it, and it allows one
// gateway per process, which would clash with tests that start edx-hub's own
// embedded gateway. The helper exits, and removes its data directory, when
// the test process exits.
func ForTest(t testing.TB) (endpoint, accessKey, secretKey string) {
	t.Helper()
	shared.once.Do(func() {
		shared.access = "edx-test"
		shared.secret = rand.Text()
		shared.endpoint, shared.err = spawn(shared.access, shared.secret)
	})
	if shared.err != nil {
		t.Fatalf("s3embed: test gateway: %v", shared.err)
	}
	return shared.endpoint, shared.access, shared.secret
}

var shared struct {
	once     sync.Once
	endpoint string
	access   string
	secret   string
	err      error
	// lifeline is the write end of the helper's stdin. It is never written
	// or closed: the helper stops when it reads end of file, which happens
	// when this process exits.
	lifeline *os.File
}

// helperEnv names the environment variable that turns a process into the
// test gateway helper; its value is a JSON helperSpec.
const helperEnv = "EDX_S3EMBED_HELPER"

// helperReady prefixes the line the helper prints when it serves.
const helperReady = "s3embed-ready "

type helperSpec struct {
	Dir    string `json:"dir"`
	Access string `json:"access"`
	Secret string `json:"secret"`
}

// init runs the gateway helper when this binary was started as one by
// ForTest. In every other process it does nothing.
func init() {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		return
	}
	os.Exit(runHelper(spec))
}

// spawn starts the helper process and waits until its gateway serves.
func spawn(access, secret string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "edx-s3embed-")
	if err != nil {
		return "", err
	}
	spec, err := json.Marshal(helperSpec{Dir: dir, Access: access, Secret: secret})
	if err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, "helper.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer stdinR.Close()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer stdoutR.Close()

	cmd := exec.Command(exe)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	cmd.Stdin = stdinR
	cmd.Stdout = stdoutW
	cmd.Stderr = logFile
	err = cmd.Start()
	stdoutW.Close()
	if err != nil {
		stdinW.Close()
		os.RemoveAll(dir)
		return "", fmt.Errorf("start helper: %w", err)
	}
	go cmd.Wait() // reap it if it ever exits

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdoutR).ReadString('\n')
		line <- s
	}()
	fail := func(err error) (string, error) {
		stdinW.Close() // tells the helper to stop
		out, _ := os.ReadFile(logPath)
		if len(out) > 0 {
			err = fmt.Errorf("%w; helper output:\n%s", err, out)
		}
		return "", err
	}
	select {
	case s := <-line:
		endpoint, ok := strings.CutPrefix(strings.TrimSpace(s), helperReady)
		if !ok {
			time.Sleep(100 * time.Millisecond) // let the helper finish its message
			return fail(errors.New("helper exited before serving"))
		}
		shared.lifeline = stdinW
		return endpoint, nil
	case <-time.After(time.Minute):
		return fail(errors.New("helper did not start within a minute"))
	}
}

// runHelper is the helper process: it serves a gateway until its stdin
// reaches end of file, then stops it and removes its data directory.
func runHelper(specJSON string) int {
	var spec helperSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "s3embed helper: %v\n", err)
		return 2
	}
	defer os.RemoveAll(spec.Dir)
	// Survive the Ctrl-C sent to the whole process group, so that the
	// cleanup above runs once the test process has gone.
	signal.Ignore(os.Interrupt)

	// Stdout is how the parent learns the endpoint; anything else goes to
	// stderr, which the parent keeps in a log file.
	ready := os.Stdout
	os.Stdout = os.Stderr
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := Start(ctx, Config{
		Dir:       filepath.Join(spec.Dir, "s3"),
		AccessKey: spec.Access,
		SecretKey: spec.Secret,
	}, log)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(ready, helperReady+srv.Endpoint())
	ready.Close()

	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
