package broker

import (
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// ForTest starts an embedded server for a test, as the hub runs it
// (operator mode, the EDX, UNITS and STAGE accounts, JetStream), on a random
// port with its store and keys in temporary directories; it is shut down
// when the test ends. A server that does not start fails the test.
// TestMaxStore is the JetStream store of test servers: set, so that the
// streams' reservations (some 12 GiB by default) are checked against it and
// not against the machine's free disk, which tests never fill.
const TestMaxStore = 64 << 30

func ForTest(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	s, err := Start(t.Context(), Config{Listen: "127.0.0.1:-1", StoreDir: dir + "/js", KeysDir: dir + "/keys", MaxStore: TestMaxStore},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("broker: test server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// HubJetStream connects to s as the hub does (the EDX account) and returns
// its JetStream; the connections close when the test ends. Each call is a
// connection of its own, as each hub of a deployment has.
func (s *Server) HubJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	h, err := s.ConnectHub(t.Context())
	if err != nil {
		t.Fatalf("broker: test connection: %v", err)
	}
	t.Cleanup(h.Close)
	return h.JS
}
