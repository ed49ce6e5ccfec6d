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

import "strings"

// Streams and the staging object store.
const (
	StreamSubmit  = "EDX_SUBMIT"  // work queue: edx.submit.<unit>
	StreamDeliver = "EDX_DELIVER" // edx.deliver.<unit>, one durable consumer per unit
	StreamStatus  = "EDX_STATUS"  // edx.status.<unit>, consumed by the hub
	StreamNotice  = "EDX_NOTICE"  // edx.notice.<unit>, one durable consumer per unit
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
	SubjectNoticePrefix  = "edx.notice."
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

// DeliverSubject is the subject the hub routes a unit's deliveries to.
func DeliverSubject(unit string) string { return SubjectDeliverPrefix + unit }

// UploadSubject is the subject a unit publishes the chunks of its large
// submissions on.
func UploadSubject(unit string) string { return SubjectUploadPrefix + unit }

// StageSubject is the subject a unit asks the hub's stage service on, to
// read a staged delivery (GetStaged).
func StageSubject(unit string) string { return SubjectStagePrefix + unit }

// StatusSubject is the subject a unit reports statuses on.
func StatusSubject(unit string) string { return SubjectStatusPrefix + unit }

// NoticeSubject is the subject the hub sends a unit's notices to.
func NoticeSubject(unit string) string { return SubjectNoticePrefix + unit }

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

// DeliverConsumer is the durable consumer name of a unit's deliveries.
func DeliverConsumer(unit string) string { return "deliver_" + consumerSafe(unit) }

// NoticeConsumer is the durable consumer name of a unit's notices.
func NoticeConsumer(unit string) string { return "notice_" + consumerSafe(unit) }

// InboxPrefix is the reply-subject prefix a unit's connection must use
// (nats.CustomInboxPrefix, set by ConnectUnit), so that no unit can listen to
// another's replies: InboxRoot, a dot, then the unit id as one token.
func InboxPrefix(unit string) string { return InboxRoot + "." + consumerSafe(unit) }
