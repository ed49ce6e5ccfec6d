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
//   - its own submit and status subjects (one permission with the next
//     three services' subjects and the stage service's, below);
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
//     the consumer's name always literal, so no wildcard token a unit
//     could fill with a literal "*" to name another's.
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
// Few subjects, few tokens: the server keeps each connection's permissions
// as a tree of its subjects' tokens, and at 10,000 units those trees were
// more than half the embedded server's heap, which its collector marked
// again and again under load (BenchmarkUnitConnectionMemory). So where the
// account's imports already narrow a wildcard to the subjects above, the
// permission has the wildcard:
//
//   - edx.*.UNIT, for the services with one token before the unit's id
//     (submit, status, fetch, upload, stage). What else it matches, only
//     the imports can carry: edx.witness.A.REST, a witness request as unit
//     REST to the log whose token is A, the unit's own first token. So a
//     unit whose first token has a log token's shape (unitMayWitnessAs)
//     gets the services listed one by one instead;
//
//   - CONSUMER.*.STREAM.CONSUMER of the stage store, for the look-up and
//     the deletion of a slot's consumer (the imports of STAGE have no other
//     verb of one token).
//
// A wildcard in a permission also admits a published subject with a
// literal "*" there; no import matches a literal "*" where it has a
// literal verb or service name, so such a message goes nowhere.
//
// Credentials issued before a subject was added here lack it: a unit gets
// it with new credentials (edx unit rotate).
func UnitPermissions(unit string) jwt.Permissions {
	var p jwt.Permissions
	if unitMayWitnessAs(unit) {
		p.Pub.Allow.Add(
			protocol.SubmitSubject(unit),
			protocol.StatusSubject(unit),
			protocol.FetchSubject(unit),
			protocol.UploadSubject(unit),
			protocol.StageSubject(unit),
		)
	} else {
		p.Pub.Allow.Add(unitServices + unit)
	}
	p.Pub.Allow.Add(protocol.SubjectWitnessPrefix + "*." + unit)
	st, c := protocol.StreamDeliver, protocol.UnitConsumer(unit)
	p.Pub.Allow.Add(
		protocol.EDXAPIPrefix+".CONSUMER.INFO."+st+"."+c,
		protocol.EDXAPIPrefix+".CONSUMER.MSG.NEXT."+st+"."+c,
		"$JS.ACK."+st+"."+c+".>",
		"$JS.ACK.*.*."+st+"."+c+".>",
	)
	for slot := range protocol.StageSlots {
		c := protocol.StageConsumer(unit, slot)
		p.Pub.Allow.Add(
			protocol.StageAPIPrefix+".CONSUMER.*."+stageStream+"."+c,
			protocol.StageAPIPrefix+".CONSUMER.MSG.NEXT."+stageStream+"."+c,
		)
	}
	p.Sub.Allow.Add(protocol.InboxPrefix(unit)+".>", protocol.SubjectCheckpoint)
	return p
}

// unitServices, followed by a unit's id, is the permission of the hub's
// services with one token before the unit (UnitPermissions).
const unitServices = "edx.*."

// unitMayWitnessAs reports whether unitServices+unit would also admit a
// witness request as another unit: whether the unit's first token has the
// shape of a log's token (protocol.LogToken, 16 lower-case hex digits). No
// edXML unit identifier has it (its first token has 3 digits).
func unitMayWitnessAs(unit string) bool {
	first, rest, ok := strings.Cut(unit, ".")
	return ok && rest != "" && len(first) == 2*protocol.LogTokenBytes && strings.Trim(first, "0123456789abcdef") == ""
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
