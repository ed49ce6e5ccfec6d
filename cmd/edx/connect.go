package main

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// connectUnit connects to the hub's NATS as a unit.
func connectUnit(ctx context.Context, url string, creds []byte, unit document.UnitID) (*nats.Conn, jetstream.JetStream, *protocol.Stage, error) {
	return protocol.ConnectUnit(ctx, url, creds, unit, nats.MaxReconnects(3))
}
