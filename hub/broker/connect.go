package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// HubConn is the hub's pair of NATS connections: one in the EDX account,
// with every right (the streams, the upload stream, the units' consumers),
// and one in the STAGE account, where the hub writes large deliveries. A NATS
// connection belongs to one account, hence two.
type HubConn struct {
	NC *nats.Conn          // EDX
	JS jetstream.JetStream // EDX
	// StageNC and StageJS are the connection to the STAGE account.
	StageNC *nats.Conn
	StageJS jetstream.JetStream
}

// ConnectHub connects the hub to both accounts: creds are its EDX
// credentials (Keys.IssueHubCreds), stageCreds its STAGE credentials
// (Keys.IssueHubStageCreds). Both connections reconnect forever; opts (a
// name, handlers, nats.InProcessServer ...) apply to both, after that
// default.
func ConnectHub(ctx context.Context, url string, creds, stageCreds []byte, opts ...nats.Option) (*HubConn, error) {
	connect := func(creds []byte, name string) (*nats.Conn, error) {
		all := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1)}, opts...)
		all = append(all, nats.UserCredentialBytes(creds))
		nc, err := nats.Connect(url, all...)
		// A server slow to judge the credentials sends its first PING
		// before its answer (seen on a loaded machine): ask again, to
		// report what it says of them.
		for try := 1; err != nil && try < 3 && strings.Contains(err.Error(), "expected 'PONG', got 'PING'"); try++ {
			nc, err = nats.Connect(url, all...)
		}
		if err != nil {
			return nil, fmt.Errorf("broker: connect %s: %w", url, err)
		}
		return nc, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := &HubConn{}
	var err error
	if h.NC, err = connect(creds, hubUserName); err != nil {
		return nil, err
	}
	if h.StageNC, err = connect(stageCreds, hubUserName+" stage"); err != nil {
		h.NC.Close()
		return nil, err
	}
	if h.JS, err = jetstream.New(h.NC); err == nil {
		h.StageJS, err = jetstream.New(h.StageNC)
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	return h, nil
}

// Stage binds the stage store (protocol.StageBucket) in the STAGE account,
// once EnsureStreams created it: the pipeline's Deps.Stage.
func (h *HubConn) Stage(ctx context.Context) (jetstream.ObjectStore, error) {
	if h.StageJS == nil {
		return nil, errors.New("broker: no STAGE connection")
	}
	obs, err := h.StageJS.ObjectStore(ctx, protocol.StageBucket)
	if err != nil {
		return nil, fmt.Errorf("broker: stage store %s: %w", protocol.StageBucket, err)
	}
	return obs, nil
}

// Close closes both connections.
func (h *HubConn) Close() {
	if h.NC != nil {
		h.NC.Close()
	}
	if h.StageNC != nil {
		h.StageNC.Close()
	}
}

// ConnectHub connects the hub to the embedded server in both accounts, with
// credentials fresh from the server's keys.
func (s *Server) ConnectHub(ctx context.Context, opts ...nats.Option) (*HubConn, error) {
	creds, err := s.keys.IssueHubCreds()
	if err != nil {
		return nil, err
	}
	stageCreds, err := s.keys.IssueHubStageCreds()
	if err != nil {
		return nil, err
	}
	return ConnectHub(ctx, s.ClientURL(), creds, stageCreds, opts...)
}
