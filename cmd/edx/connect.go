package main

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// connectUnit connects to the hub's NATS as a unit.
func connectUnit(ctx context.Context, url string, creds []byte, unit document.UnitID) (*nats.Conn, jetstream.JetStream, jetstream.ObjectStore, error) {
	return protocol.ConnectUnit(ctx, url, creds, unit, nats.MaxReconnects(3))
}

// stageContainer uploads a large container, encrypted, for the hub.
func stageContainer(ctx context.Context, js jetstream.JetStream, c *protocol.Container) error {
	name, key, err := protocol.UploadStaged(ctx, js, c.Data)
	if err != nil {
		return err
	}
	c.Staged, c.StageKey, c.Data = name, key, nil
	return nil
}
