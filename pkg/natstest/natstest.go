// Package natstest starts a NATS server of a test's own, in the test's
// process (nats-server/v2), and connects to it: for the tests of one
// package that need a real server but none of edx's accounts.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Connect starts a server on a free port of 127.0.0.1, with JetStream in
// a temporary directory when jetStream is true, and returns a connection
// to it; both end with the test.
func Connect(t testing.TB, jetStream bool) (*server.Server, *nats.Conn) {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	if jetStream {
		opts.JetStream, opts.StoreDir = true, t.TempDir()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return s, nc
}
