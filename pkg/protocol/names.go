// Package protocol defines, once, how hub and agents talk over NATS JetStream:
// stream, subject and consumer names, message headers and bodies, the inline
// size limit, the encryption of staged containers, and how a unit connects
// (ConnectUnit).
//
// Units live in a NATS account of their own (UNITS) that holds no stream: they
// reach the hub's streams in the EDX account, and the store of large
// deliveries in the STAGE account, through service imports. Their JetStream
// API calls therefore go under a prefix (EDXAPIPrefix, StageAPIPrefix), which
// ConnectUnit sets up; nothing else on the agent side needs to know it.
package protocol

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Streams and the staging object store.
const (
	StreamSubmit = "EDX_SUBMIT" // work queue: edx.submit.<unit>
	// StreamDeliver holds everything a unit receives, its deliveries and
	// its notices, on one subject per unit (edx.deliver.<unit>), which the
	// unit reads with one durable consumer (UnitConsumer); IsNotice tells
	// the two apart.
	StreamDeliver = "EDX_DELIVER"
	StreamStatus  = "EDX_STATUS" // edx.status.<unit>, consumed by the hub
	// LegacyStreamNotice held the notices, each unit reading them with a
	// consumer of its own (LegacyNoticeConsumer), until they joined the
	// deliveries in StreamDeliver. A hub migrates it (hub/broker); an agent
	// still reads it from a hub that has it.
	LegacyStreamNotice = "EDX_NOTICE"
	// StreamUpload holds the chunks of submissions above the inline limit,
	// edx.upload.<unit>: units only write (UploadStaged), the hub reads
	// (GetUpload) and removes them (ReleaseUpload).
	StreamUpload = "EDX_UPLOAD"
	// StreamEvents holds the hubs' decisions, edx.event.<kind> (hub/events):
	// every hub publishes, every hub follows with a consumer of its own.
	// Units have no access to it.
	StreamEvents = "EDX_EVENTS"
	// StageBucket is the object store (in the STAGE account) of deliveries
	// above the inline limit: the hub writes, recipients read through the
	// hub's stage service (GetStaged).
	StageBucket = "EDX_STAGE"
)

// JetStream API prefixes under which the UNITS account imports the EDX and
// STAGE accounts' APIs (jetstream.NewWithAPIPrefix). Only ConnectUnit and the
// hub's broker use them.
const (
	EDXAPIPrefix   = "$JS.EDX.API"
	StageAPIPrefix = "$JS.STAGE.API"
)

// InboxRoot is the first token of every unit's inbox prefix.
const InboxRoot = "_INBOX_EDX"

// Subject prefixes; a subject is the prefix followed by a unit id.
const (
	SubjectSubmitPrefix  = "edx.submit."
	SubjectDeliverPrefix = "edx.deliver."
	SubjectStatusPrefix  = "edx.status."
	SubjectUploadPrefix  = "edx.upload."
	SubjectStagePrefix   = "edx.stage." // requests to the hub's stage service
	SubjectEventPrefix   = "edx.event." // followed by the event's kind, not a unit
)

// HubConsumer is the durable pull consumer on EDX_SUBMIT shared by every hub replica.
const HubConsumer = "edx-hub"

// HubStatusConsumer is the hub's durable pull consumer on EDX_STATUS.
const HubStatusConsumer = "edx-hub-status"

// SubmitSubject is the subject a unit publishes its submissions on.
func SubmitSubject(unit string) string { return SubjectSubmitPrefix + unit }

// DeliverSubject is the subject of everything the hub sends a unit in
// StreamDeliver: its deliveries and its notices.
func DeliverSubject(unit string) string { return SubjectDeliverPrefix + unit }

// UploadSubject is the subject a unit publishes the chunks of its large
// submissions on.
func UploadSubject(unit string) string { return SubjectUploadPrefix + unit }

// StageSubject is the subject a unit asks the hub's stage service on, to
// read a staged delivery (GetStaged).
func StageSubject(unit string) string { return SubjectStagePrefix + unit }

// StatusSubject is the subject a unit reports statuses on.
func StatusSubject(unit string) string { return SubjectStatusPrefix + unit }

// LegacySubjectNoticePrefix is where LegacyStreamNotice held a unit's
// notices (followed by the unit id).
const LegacySubjectNoticePrefix = "edx.notice."

// UnitFromSubject returns the unit id at the end of an edx subject.
func UnitFromSubject(subject string) string {
	// Unit ids contain dots (000.00.00.H29): strip the two-part prefix.
	parts := strings.SplitN(subject, ".", 3)
	if len(parts) == 3 {
		return parts[2]
	}
	return ""
}

// consumerSafe turns a unit id into a token valid in a consumer name.
func consumerSafe(unit string) string { return strings.ReplaceAll(unit, ".", "_") }

// UnitConsumer is the name of a unit's durable consumer on StreamDeliver,
// which reads everything the unit receives (DeliverSubject: one literal
// subject, which the server finds the next message of without looking at
// other units'). It keeps the name it had when it read deliveries only, so
// that the credentials issued then still allow it.
func UnitConsumer(unit string) string { return "deliver_" + consumerSafe(unit) }

// UnitConsumerMetadata marks, in its metadata, a unit's consumer that reads
// notices too: a consumer without it is an earlier hub's, which keeps the
// notices in LegacyStreamNotice.
const UnitConsumerMetadata = "edx_notices"

// IsNotice reports whether a message a unit received (its headers) is a
// notice (HeaderKind); anything else is a delivery.
func IsNotice(h nats.Header) bool { return h != nil && h.Get(HeaderKind) == KindNotice }

// LegacyNoticeConsumer is the name of a unit's consumer of
// LegacyStreamNotice.
func LegacyNoticeConsumer(unit string) string { return "notice_" + consumerSafe(unit) }

// Pulls of a unit's consumer (PullUnit): an agent asks for messages with a
// request that lasts UnitPullExpiry, during which the server, while it has
// nothing to send, sends a heartbeat every UnitPullHeartbeat. At rest a
// connected unit costs the hub's NATS a request, four heartbeats and the
// request's end every ten minutes (with 10,000 units, some 100 messages a
// second); with the 30 s heartbeat of nats.go's Messages it was 22, and 60%
// of an idle hub's CPU at 2,000 units.
//
// A pull the server lost without a word is noticed after two heartbeats
// are missed, four minutes. That happens only when the NATS server holding
// the unit's consumer restarts while the unit stays connected to another
// server of the cluster; a consumer deleted, or a connection lost and back,
// is noticed at once.
const (
	UnitPullExpiry    = 10 * time.Minute
	UnitPullHeartbeat = 2 * time.Minute
)

// A unit's keepalive: how often its quiet connection proves it is alive,
// both ways. The agent pings the server at this interval, and its pull asks
// the server for a heartbeat at the same interval (agent nats.keepalive,
// default UnitPullHeartbeat, the NATS client's default ping interval).
// Longer saves the hub's idle CPU (each ping and heartbeat wakes the
// server's loops for the unit) and notices a lost pull or a hung server
// later. The heartbeat must stay under half a request's life
// (UnitPullExpiry), so at most MaxUnitKeepalive.
const (
	MinUnitKeepalive = 10 * time.Second
	MaxUnitKeepalive = 4 * time.Minute
)

// UnitPullMessages is the most messages a unit's pull asks for at once.
const UnitPullMessages = 256

// InboxPrefix is the reply-subject prefix a unit's connection must use
// (nats.CustomInboxPrefix, set by ConnectUnit), so that no unit can listen to
// another's replies: InboxRoot, a dot, then the unit id as one token.
func InboxPrefix(unit string) string { return InboxRoot + "." + consumerSafe(unit) }
