package main

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// connectUnit connects to the hub's NATS as a unit; a lost connection is
// retried a few times only, so that a command does not hang on a hub that
// went away.
func connectUnit(ctx context.Context, url string, creds []byte, unit document.UnitID, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, *protocol.Stage, error) {
	return protocol.ConnectUnit(ctx, url, creds, unit, append([]nats.Option{nats.MaxReconnects(3)}, opts...)...)
}
