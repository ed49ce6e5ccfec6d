package broker

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/edxhub/edx/pkg/protocol"
)

// stageStream is the stream behind the stage store.
const stageStream = protocol.StageStream

// service is one service the EDX or STAGE account exports to UNITS. A
// JetStream API subject ($JS.API...) is imported under the exporter's API
// prefix (protocol.EDXAPIPrefix, protocol.StageAPIPrefix); the others keep
// their subject.
type service struct {
	subject  string
	response jwt.ResponseType
	// threshold, for a streamed response, is how long the server keeps the
	// reply's mapping back to the unit without a response passing (0: the
	// server's default, 2 minutes).
	threshold time.Duration
}

// pullResponseThreshold is the threshold of pull requests (MSG.NEXT, a
// streamed response through the import): longer than a unit's request
// lives (protocol.UnitPullExpiry), so that a quiet request stays reachable
// until it ends, whatever its heartbeat (protocol.MaxUnitKeepalive). At the
// server's default of 2 minutes, a request whose 2-minute heartbeat came a
// moment late, or any longer heartbeat, lost its mapping while the
// consumer kept the request waiting: deaf, it took every message sent to
// the unit into nothing, each found lost only at the ack wait, until the
// request expired (TestUnitPullQuietLongerThanThreshold). A mapping now
// outlives its request by up to the threshold: one per request, a few
// hundred bytes.
var pullResponseThreshold = protocol.UnitPullExpiry + time.Minute

// edxServices are what units may do in the EDX account: publish their
// submissions, statuses and upload chunks (every reply, a PubAck included, goes
// back through the import, never onto a subject in EDX), and look up, pull
// from and ack on their durable consumer of EDX_DELIVER (acks in the v1 and
// v2 subject layouts).
func edxServices() []service {
	st := protocol.StreamDeliver
	return []service{
		{protocol.SubjectSubmitPrefix + ">", jwt.ResponseTypeSingleton, 0},
		{protocol.SubjectStatusPrefix + ">", jwt.ResponseTypeSingleton, 0},
		{protocol.SubjectUploadPrefix + ">", jwt.ResponseTypeSingleton, 0},
		{protocol.SubjectStagePrefix + ">", jwt.ResponseTypeSingleton, 0},
		{protocol.SubjectWitnessPrefix + ">", jwt.ResponseTypeSingleton, 0},
		{protocol.SubjectFetchPrefix + ">", jwt.ResponseTypeSingleton, 0},
		{"$JS.API.CONSUMER.INFO." + st + ".*", jwt.ResponseTypeSingleton, 0},
		{"$JS.API.CONSUMER.MSG.NEXT." + st + ".*", jwt.ResponseTypeStream, pullResponseThreshold},
		{"$JS.ACK." + st + ".>", jwt.ResponseTypeSingleton, 0},
		{"$JS.ACK.*.*." + st + ".>", jwt.ResponseTypeSingleton, 0},
	}
}

// stageServices are what units may do in the STAGE account: look up, pull
// from and delete a consumer of the stage store, which the hub's stage
// service created for them (StageService); UnitPermissions narrows these to
// the unit's own protocol.StageSlots consumers. Nothing lists, reads by
// subject, creates or writes.
func stageServices() []service {
	return []service{
		{"$JS.API.CONSUMER.INFO." + stageStream + ".*", jwt.ResponseTypeSingleton, 0},
		{"$JS.API.CONSUMER.MSG.NEXT." + stageStream + ".*", jwt.ResponseTypeStream, pullResponseThreshold},
		{"$JS.API.CONSUMER.DELETE." + stageStream + ".*", jwt.ResponseTypeSingleton, 0},
	}
}

func exports(services []service) jwt.Exports {
	var ex jwt.Exports
	for _, s := range services {
		ex.Add(&jwt.Export{Name: s.subject, Subject: jwt.Subject(s.subject), Type: jwt.Service, ResponseType: s.response, ResponseThreshold: s.threshold})
	}
	return ex
}

// edxExports are the EDX services and, as streams, the units' inboxes (the
// hub sends a submission's decision to the inbox subject its sender named,
// protocol.NoticeTo, besides the unit's notices in EDX_DELIVER) and the checkpoints
// the hub offers every witness (protocol.SubjectCheckpoint).
func edxExports() jwt.Exports {
	ex := exports(edxServices())
	ex.Add(&jwt.Export{Name: "unit inboxes", Subject: jwt.Subject(protocol.InboxRoot + ".>"), Type: jwt.Stream})
	ex.Add(&jwt.Export{Name: "checkpoints", Subject: jwt.Subject(protocol.SubjectCheckpoint), Type: jwt.Stream})
	return ex
}

func stageExports() jwt.Exports { return exports(stageServices()) }

// unitsImports are the UNITS account's imports: every export of EDX and
// STAGE, the JetStream API under each one's prefix, and the units' inboxes
// from EDX. Each unit subscribes only to its own inbox prefix
// (UnitPermissions), so what the hub sends to an inbox reaches that unit
// alone. STAGE sends nothing to inboxes: units pull staged chunks through
// the imported pull requests, whose replies the import maps back.
func unitsImports(edx, stage string) jwt.Imports {
	var im jwt.Imports
	add := func(from, prefix string, services []service) {
		for _, s := range services {
			i := &jwt.Import{Name: s.subject, Subject: jwt.Subject(s.subject), Account: from, Type: jwt.Service}
			if rest, ok := strings.CutPrefix(s.subject, "$JS.API."); ok {
				i.LocalSubject = jwt.RenamingSubject(prefix + "." + rest)
			}
			im.Add(i)
		}
	}
	add(edx, protocol.EDXAPIPrefix, edxServices())
	add(stage, protocol.StageAPIPrefix, stageServices())
	im.Add(&jwt.Import{Name: "unit inboxes", Subject: jwt.Subject(protocol.InboxRoot + ".>"), Account: edx, Type: jwt.Stream})
	im.Add(&jwt.Import{Name: "checkpoints", Subject: jwt.Subject(protocol.SubjectCheckpoint), Account: edx, Type: jwt.Stream})
	return im
}

// UnitPermissions returns the NATS permissions of a unit's user in the UNITS
// account. The account's imports already limit units to the services above;
// these limit each unit to its own subjects. Everything not listed is denied
// by the server.
//
// Publish:
//
//   - its own submit and status subjects;
//
//   - on its durable pull consumer of EDX_DELIVER (created by the hub),
//     which reads its deliveries and notices: consumer info and
//     next-message requests under protocol.EDXAPIPrefix, and acks (v1 and
//     v2 ack subject layouts); or, when the hub keeps no consumer per
//     unit, its fetch requests (protocol.FetchSubject), which the hub
//     answers on the unit's inbox;
//
//   - uploads: chunks on its own upload subject, and nothing else there (no
//     read, no list, no purge);
//
//   - large deliveries: requests to the hub's stage service on its own
//     subject, and, under protocol.StageAPIPrefix, the look-up of, pulls
//     from and deletion of its own protocol.StageSlots consumers of the
//     stage store, which the service creates, each on one object's chunks;
//     every subject literal, so no wildcard token a unit could fill with a
//     literal "*".
//
//   - witnessing the hubs' logs: requests to the witness service of any
//     hub's log, always as itself: protocol.WitnessSubject(origin, unit),
//     the log's token a wildcard (each hub subscribes to its own log's
//     token only; the unit's id, last, is literal).
//
// Subscribe: its own inbox prefix (protocol.ConnectUnit sets
// nats.CustomInboxPrefix(protocol.InboxPrefix(unit))), and the checkpoints
// the hub offers every witness (protocol.SubjectCheckpoint), which only the
// hub publishes. Replies the unit sends (acks) are listed explicitly, so no
// allow_responses.
//
// Credentials issued before a subject was added here lack it: a unit gets
// it with new credentials (edx unit rotate).
func UnitPermissions(unit string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(
		protocol.SubmitSubject(unit),
		protocol.StatusSubject(unit),
		protocol.SubjectWitnessPrefix+"*."+unit,
		protocol.FetchSubject(unit),
	)
	st, c := protocol.StreamDeliver, protocol.UnitConsumer(unit)
	p.Pub.Allow.Add(
		protocol.EDXAPIPrefix+".CONSUMER.INFO."+st+"."+c,
		protocol.EDXAPIPrefix+".CONSUMER.MSG.NEXT."+st+"."+c,
		"$JS.ACK."+st+"."+c+".>",
		"$JS.ACK.*.*."+st+"."+c+".>",
	)
	p.Pub.Allow.Add(protocol.UploadSubject(unit))
	p.Pub.Allow.Add(protocol.StageSubject(unit))
	for slot := range protocol.StageSlots {
		c := protocol.StageConsumer(unit, slot)
		p.Pub.Allow.Add(
			protocol.StageAPIPrefix+".CONSUMER.INFO."+stageStream+"."+c,
			protocol.StageAPIPrefix+".CONSUMER.MSG.NEXT."+stageStream+"."+c,
			protocol.StageAPIPrefix+".CONSUMER.DELETE."+stageStream+"."+c,
		)
	}
	p.Sub.Allow.Add(protocol.InboxPrefix(unit)+".>", protocol.SubjectCheckpoint)
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
