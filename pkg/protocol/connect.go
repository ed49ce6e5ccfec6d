package protocol

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
)

// ConnectUnit connects to the hub's NATS as unit, with the unit's
// credentials (a .creds file's bytes, as the hub issues them). It returns:
//
//   - the connection, which reconnects forever once established (the first
//     connection must succeed: bad credentials or an unreachable server are
//     an error here, so that they are reported rather than retried blindly);
//   - js, the hub's JetStream as the unit may use it: publish submissions
//     (SubmitMsg) and statuses (StatusMsg), bind its deliveries' and
//     notices' consumers (js.Consumer with StreamDeliver/DeliverConsumer,
//     StreamNotice/NoticeConsumer) and ack their messages, and upload large
//     submissions (UploadStaged);
//   - stage, the unit's access to the store of large deliveries
//     (StageBucket), which it reads with GetStaged.
//
// opts are applied after the defaults (name "edx <unit>", reconnect forever,
// a 2s reconnect wait) and before what the unit's permissions require (its
// credentials and its inbox prefix), which they cannot change. Add an
// ErrorHandler to see permission violations, which NATS reports
// asynchronously.
func ConnectUnit(ctx context.Context, url string, creds []byte, unit document.UnitID, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, *Stage, error) {
	if err := unit.Validate(); err != nil {
		return nil, nil, nil, fmt.Errorf("protocol: connect: %w", err)
	}
	all := []nats.Option{
		nats.Name("edx " + string(unit)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(2 * time.Second),
	}
	all = append(all, opts...)
	all = append(all,
		nats.UserCredentialBytes(creds),
		nats.CustomInboxPrefix(InboxPrefix(string(unit))),
	)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("protocol: connect %s as %s: %w", url, unit, err)
	}
	js, err := jetstream.NewWithAPIPrefix(nc, EDXAPIPrefix)
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("protocol: connect: %w", err)
	}
	sjs, err := jetstream.NewWithAPIPrefix(nc, StageAPIPrefix)
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("protocol: connect: %w", err)
	}
	return nc, js, newStage(nc, sjs, unit), nil
}
