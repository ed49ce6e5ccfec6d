// Package protocol defines, once, how hub and agents talk over NATS JetStream:
// stream, subject and consumer names, message headers and bodies, and the
// inline size limit.
package protocol

import "strings"

// Streams and the staging object store.
const (
	StreamSubmit  = "EDX_SUBMIT"  // work queue: edx.submit.<unit>
	StreamDeliver = "EDX_DELIVER" // edx.deliver.<unit>, one durable consumer per unit
	StreamStatus  = "EDX_STATUS"  // edx.status.<unit>, consumed by the hub
	StreamNotice  = "EDX_NOTICE"  // edx.notice.<unit>, one durable consumer per unit
	StageBucket   = "EDX_STAGE"   // object store for containers above the inline limit
)

// Subject prefixes; a subject is the prefix followed by a unit id.
const (
	SubjectSubmitPrefix  = "edx.submit."
	SubjectDeliverPrefix = "edx.deliver."
	SubjectStatusPrefix  = "edx.status."
	SubjectNoticePrefix  = "edx.notice."
)

// HubConsumer is the durable pull consumer on EDX_SUBMIT shared by every hub replica.
const HubConsumer = "edx-hub"

// HubStatusConsumer is the hub's durable pull consumer on EDX_STATUS.
const HubStatusConsumer = "edx-hub-status"

// SubmitSubject is the subject a unit publishes its submissions on.
func SubmitSubject(unit string) string { return SubjectSubmitPrefix + unit }

// DeliverSubject is the subject the hub routes a unit's deliveries to.
func DeliverSubject(unit string) string { return SubjectDeliverPrefix + unit }

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
// (nats.CustomInboxPrefix), so that no unit can listen to another's replies.
func InboxPrefix(unit string) string { return "_INBOX_" + consumerSafe(unit) }
