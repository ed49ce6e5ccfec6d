package broker

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/edxhub/edx/pkg/protocol"
)

// stageStream is the stream behind the staging object store.
const stageStream = "OBJ_" + protocol.StageBucket

// UnitPermissions returns the NATS permissions of a unit's user. Everything
// not listed is denied by the server.
//
// Publish:
//   - its own submit and status subjects;
//   - on its two durable pull consumers (created by the hub): consumer info,
//     next-message requests and acks (v1 and v2 ack subject layouts);
//   - the staging object store, exactly what nats.go's jetstream ObjectStore
//     Put and Get use: the stream's info, the direct get of an object's meta
//     message, publishing chunks and meta, creating an ordered consumer whose
//     filter is one object's chunks, deleting that consumer when done, and the
//     flow-control replies of that consumer.
//
// Subscribe: only its own inbox prefix (the client sets
// nats.CustomInboxPrefix(protocol.InboxPrefix(unit))). Replies the unit sends
// (acks, flow control) are listed explicitly, so no allow_responses.
func UnitPermissions(unit string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(
		protocol.SubmitSubject(unit),
		protocol.StatusSubject(unit),
	)
	for _, c := range []struct{ stream, consumer string }{
		{protocol.StreamDeliver, protocol.DeliverConsumer(unit)},
		{protocol.StreamNotice, protocol.NoticeConsumer(unit)},
	} {
		p.Pub.Allow.Add(
			"$JS.API.CONSUMER.INFO."+c.stream+"."+c.consumer,
			"$JS.API.CONSUMER.MSG.NEXT."+c.stream+"."+c.consumer,
			"$JS.ACK."+c.stream+"."+c.consumer+".>",
			"$JS.ACK.*.*."+c.stream+"."+c.consumer+".>",
		)
	}
	stageMeta := "$O." + protocol.StageBucket + ".M.*"
	stageChunk := "$O." + protocol.StageBucket + ".C.*"
	p.Pub.Allow.Add(
		"$JS.API.STREAM.INFO."+stageStream,
		"$JS.API.DIRECT.GET."+stageStream+"."+stageMeta,
		stageChunk,
		stageMeta,
		"$JS.API.CONSUMER.CREATE."+stageStream+".*."+stageChunk,
		"$JS.API.CONSUMER.DELETE."+stageStream+".*",
		"$JS.FC."+stageStream+".>",
		"$JS.FC.*.*."+stageStream+".>",
	)
	p.Sub.Allow.Add(protocol.InboxPrefix(unit) + ".>")
	return p
}

// validUnit reports whether unit can be placed in subjects and consumer
// names: dot-separated tokens of letters, digits and '-'. This is wider than
// the edXML unit identifier (pkg/document validates that); what matters here
// is that no unit can carry a wildcard, whitespace or '_' (consumer names
// and inbox prefixes replace '.' by '_', so '_' would let two units collide).
func validUnit(unit string) error {
	if unit == "" {
		return fmt.Errorf("broker: invalid unit %q", unit)
	}
	for tok := range strings.SplitSeq(unit, ".") {
		if tok == "" {
			return fmt.Errorf("broker: invalid unit %q", unit)
		}
		for _, r := range tok {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("broker: invalid unit %q", unit)
			}
		}
	}
	return nil
}
