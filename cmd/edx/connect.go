package main

import (
	"bytes"
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// connectUnit connects to the hub's NATS as a unit.
func connectUnit(ctx context.Context, url string, creds []byte, unit document.UnitID) (*nats.Conn, jetstream.JetStream, jetstream.ObjectStore, error) {
	nc, err := nats.Connect(url, nats.UserCredentialBytes(creds), nats.CustomInboxPrefix(protocol.InboxPrefix(string(unit))), nats.Name("edx "+string(unit)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	os, err := js.ObjectStore(ctx, protocol.StageBucket)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	return nc, js, os, nil
}

// stageContainer puts a large container in the object store.
func stageContainer(ctx context.Context, os jetstream.ObjectStore, unit document.UnitID, c *protocol.Container) error {
	c.Staged = protocol.SubmitStageName(unit, c.DocumentID)
	_, err := os.Put(ctx, jetstream.ObjectMeta{Name: c.Staged}, bytes.NewReader(c.Data))
	c.Data = nil
	return err
}
