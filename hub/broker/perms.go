package broker

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/edxhub/edx/pkg/protocol"
)

// Streams behind the object stores.
const (
	stageStream  = "OBJ_" + protocol.StageBucket
	uploadStream = "OBJ_" + protocol.UploadBucket
)

// service is one service the EDX or STAGE account exports to UNITS. A
// JetStream API subject ($JS.API...) is imported under the exporter's API
// prefix (protocol.EDXAPIPrefix, protocol.StageAPIPrefix); the others keep
// their subject.
type service struct {
	subject  string
	response jwt.ResponseType
}

// edxServices are what units may do in the EDX account: publish their
// submissions, statuses and uploads (every reply, a PubAck included, goes
// back through the import, never onto a subject in EDX), and look up, pull
// from and ack on their two durable consumers (acks in the v1 and v2 subject
// layouts).
func edxServices() []service {
	s := []service{
		{protocol.SubjectSubmitPrefix + ">", jwt.ResponseTypeSingleton},
		{protocol.SubjectStatusPrefix + ">", jwt.ResponseTypeSingleton},
		{"$O." + protocol.UploadBucket + ".>", jwt.ResponseTypeSingleton},
	}
	for _, st := range []string{protocol.StreamDeliver, protocol.StreamNotice} {
		s = append(s,
			service{"$JS.API.CONSUMER.INFO." + st + ".*", jwt.ResponseTypeSingleton},
			service{"$JS.API.CONSUMER.MSG.NEXT." + st + ".*", jwt.ResponseTypeStream},
			service{"$JS.ACK." + st + ".>", jwt.ResponseTypeSingleton},
			service{"$JS.ACK.*.*." + st + ".>", jwt.ResponseTypeSingleton},
		)
	}
	return s
}

// stageServices are what units may do in the STAGE account: exactly what
// nats.go's ObjectStore binding and Get use on the stage store (stream info,
// the direct get of an object's meta, an ordered consumer on one object's
// chunks, its deletion, its flow-control replies). Nothing writes.
func stageServices() []service {
	meta := "$O." + protocol.StageBucket + ".M.*"
	chunks := "$O." + protocol.StageBucket + ".C.*"
	return []service{
		{"$JS.API.STREAM.INFO." + stageStream, jwt.ResponseTypeSingleton},
		{"$JS.API.DIRECT.GET." + stageStream + "." + meta, jwt.ResponseTypeSingleton},
		{"$JS.API.CONSUMER.CREATE." + stageStream + ".*." + chunks, jwt.ResponseTypeSingleton},
		{"$JS.API.CONSUMER.DELETE." + stageStream + ".*", jwt.ResponseTypeSingleton},
		{"$JS.FC." + stageStream + ".>", jwt.ResponseTypeSingleton},
		{"$JS.FC.*.*." + stageStream + ".>", jwt.ResponseTypeSingleton},
	}
}

func exports(services []service) jwt.Exports {
	var ex jwt.Exports
	for _, s := range services {
		ex.Add(&jwt.Export{Name: s.subject, Subject: jwt.Subject(s.subject), Type: jwt.Service, ResponseType: s.response})
	}
	return ex
}

// edxExports are the EDX services and, as a stream, the units' inboxes: the
// hub sends a submission's decision to the inbox subject its sender named
// (protocol.NoticeTo), besides the unit's notice stream.
func edxExports() jwt.Exports {
	ex := exports(edxServices())
	ex.Add(&jwt.Export{Name: "unit inboxes", Subject: jwt.Subject(protocol.InboxRoot + ".>"), Type: jwt.Stream})
	return ex
}

// stageExports are the stage services and, as a stream, the units' inboxes:
// an ordered consumer of the stage store delivers to the inbox subject of the
// unit that created it, in the STAGE account, and the stream carries it to
// UNITS.
func stageExports() jwt.Exports {
	ex := exports(stageServices())
	ex.Add(&jwt.Export{Name: "unit inboxes", Subject: jwt.Subject(protocol.InboxRoot + ".>"), Type: jwt.Stream})
	return ex
}

// unitsImports are the UNITS account's imports: every export of EDX and
// STAGE, the JetStream API under each one's prefix. Each unit subscribes
// only to its own inbox prefix (UnitPermissions), so what either account
// sends to an inbox reaches that unit alone.
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
	for _, from := range []string{edx, stage} {
		im.Add(&jwt.Import{Name: "unit inboxes", Subject: jwt.Subject(protocol.InboxRoot + ".>"), Account: from, Type: jwt.Stream})
	}
	return im
}

// UnitPermissions returns the NATS permissions of a unit's user in the UNITS
// account. The account's imports already limit units to the services above;
// these limit each unit to its own subjects. Everything not listed is denied
// by the server.
//
// Publish:
//   - its own submit and status subjects;
//   - on its two durable pull consumers in EDX (created by the hub): consumer
//     info and next-message requests under protocol.EDXAPIPrefix, and acks
//     (v1 and v2 ack subject layouts);
//   - uploads: chunks and meta messages of the upload store, and nothing
//     else there (no read, no list, no purge);
//   - the stage store, read only, under protocol.StageAPIPrefix: exactly
//     what nats.go's ObjectStore binding and Get use (stream info, the direct
//     get of an object's meta message, an ordered consumer whose filter is
//     one object's chunks, deleting that consumer when done, and the
//     flow-control replies of that consumer).
//
// Subscribe: only its own inbox prefix (protocol.ConnectUnit sets
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
			protocol.EDXAPIPrefix+".CONSUMER.INFO."+c.stream+"."+c.consumer,
			protocol.EDXAPIPrefix+".CONSUMER.MSG.NEXT."+c.stream+"."+c.consumer,
			"$JS.ACK."+c.stream+"."+c.consumer+".>",
			"$JS.ACK.*.*."+c.stream+"."+c.consumer+".>",
		)
	}
	p.Pub.Allow.Add(
		"$O."+protocol.UploadBucket+".C.*",
		"$O."+protocol.UploadBucket+".M.*",
	)
	stageMeta := "$O." + protocol.StageBucket + ".M.*"
	stageChunk := "$O." + protocol.StageBucket + ".C.*"
	p.Pub.Allow.Add(
		protocol.StageAPIPrefix+".STREAM.INFO."+stageStream,
		protocol.StageAPIPrefix+".DIRECT.GET."+stageStream+"."+stageMeta,
		protocol.StageAPIPrefix+".CONSUMER.CREATE."+stageStream+".*."+stageChunk,
		protocol.StageAPIPrefix+".CONSUMER.DELETE."+stageStream+".*",
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
