// Package reason holds the stable codes that say why a document, a
// certificate or a status was refused. Senders, logs, metrics and tests match
// on the codes; the messages are for people.
package reason

import "strings"

// Code is a stable, dotted reason code such as "signature.untrusted_root".
type Code string

// Container structure.
const (
	ContainerMalformed      Code = "container.malformed"        // not a ZIP, or unreadable
	ContainerTooLarge       Code = "container.too_large"        // over the size limit
	ContainerTooManyEntries Code = "container.too_many_entries" // over the entry limit
	ContainerZipBomb        Code = "container.zip_bomb"         // uncompressed size or ratio over the limits
	ContainerBadPath        Code = "container.bad_path"         // unsafe path, a payload name the builder refuses (container.CheckFileName), or an entry outside the layout
	ContainerDuplicateEntry Code = "container.duplicate_entry"  // the same name twice
	ContainerMimetype       Code = "container.mimetype"         // mimetype missing, not first, compressed or wrong
	ContainerNoManifest     Code = "container.no_manifest"      // META-INF/ASiCManifest.xml missing or invalid
	ContainerNoSignature    Code = "container.no_signature"     // META-INF/signature001.p7s missing
	ContainerNoMetadata     Code = "container.no_metadata"      // document.json missing
	ContainerDigestMismatch Code = "container.digest_mismatch"  // a file's SHA-256 differs from the manifest
	ContainerMissingFile    Code = "container.missing_file"     // listed in the manifest, absent from the ZIP
	ContainerUnlistedFile   Code = "container.unlisted_file"    // in the ZIP, not in the manifest
	ContainerNoFiles        Code = "container.no_files"         // no payload file
)

// Signature.
const (
	SignatureMalformed      Code = "signature.malformed"        // not a CMS SignedData we can read
	SignatureInvalid        Code = "signature.invalid"          // does not verify over the manifest
	SignatureAlgorithm      Code = "signature.weak_algorithm"   // not SHA-256 with RSA>=2048 or ECDSA P-256
	SignatureSignerCount    Code = "signature.signer_count"     // not exactly one signer
	SignatureUntrustedRoot  Code = "signature.untrusted_root"   // the chain does not reach a trust root
	SignatureExpired        Code = "signature.expired"          // a certificate is outside its validity at the checked time
	SignatureRevoked        Code = "signature.revoked"          // the signer is on a CRL
	SignatureCRLStale       Code = "signature.crl_stale"        // the issuer's CRL is past its nextUpdate: revocation unknown (transient)
	SignatureKeyUsage       Code = "signature.key_usage"        // no digitalSignature/nonRepudiation, or wrong EKU
	SignatureNoUnit         Code = "signature.no_unit"          // the certificate names no unit
	SignatureUnitMismatch   Code = "signature.unit_mismatch"    // the certificate's unit is not the metadata's sender
	SignatureSigningCertRef Code = "signature.signing_cert_ref" // ESS signing-certificate-v2 does not match the signer
)

// Metadata and routing.
const (
	MetadataInvalid    Code = "metadata.invalid"    // document.json fails validation
	MetadataClassified Code = "metadata.classified" // confidentiality other than 0
	SenderMismatch     Code = "sender.mismatch"     // the submit subject's unit is not the metadata's sender
	SenderUnknown      Code = "sender.unknown"      // the sender is not a registered unit
	SenderDisabled     Code = "sender.disabled"     // the sender is registered but disabled
	RecipientUnknown   Code = "recipient.unknown"   // a recipient is not a registered unit
	RecipientDisabled  Code = "recipient.disabled"  // a recipient is registered but disabled
	SubmissionInvalid  Code = "submission.invalid"  // the submit message itself is malformed
	SubmissionStaged   Code = "submission.stage"    // the staged container is missing or its digest differs
	DocumentConflict   Code = "document.conflict"   // another container was already accepted under this id
	ReceiptInvalid     Code = "receipt.invalid"     // a hub receipt does not verify or does not match
)

// UpstreamNotGateway: a document marked as brought in from an upstream axis
// (document.Upstream), from a unit that is not the city's gateway.
const UpstreamNotGateway Code = "upstream.not_gateway"

// edXML packets (QCVN 102:2016, package edxml).
const (
	EdXMLMalformed  Code = "edxml.malformed"  // not well-formed XML, or not an edXML packet of the expected kind
	EdXMLDTD        Code = "edxml.dtd"        // a DOCTYPE or entity declaration: refused (entity expansion, external entities)
	EdXMLTooLarge   Code = "edxml.too_large"  // over the packet size limit
	EdXMLLimit      Code = "edxml.limit"      // over a depth, element, attribute, text or attachment limit
	EdXMLField      Code = "edxml.field"      // a field's value is not of its type (date, number) or appears twice
	EdXMLBase64     Code = "edxml.base64"     // an attachment's content is not valid base64
	EdXMLAttachment Code = "edxml.attachment" // an attachment's name is unusable or used twice
)

// References: in_reply_to and business types 1 (revoke), 2 (update) and 3
// (replace).
const (
	ReferenceUnknown   Code = "reference.unknown"    // in_reply_to names no accepted document the sender sent or received
	ReferenceNotSender Code = "reference.not_sender" // a revocation, update or replacement of another unit's document
)

// Statuses a unit reports (the hub refuses them with a status_rejected
// notice naming one of these, or one of the codes above).
const (
	StatusInvalid     Code = "status.invalid"      // malformed, or a field over its size limit
	StatusNotEntitled Code = "status.not_entitled" // a code this unit may not send on this document (13 is the sender's, the others a recipient's)
	StatusTooMany     Code = "status.too_many"     // the unit reached the limit of statuses on one document
	StatusTime        Code = "status.time"         // a time in the future or before the document was accepted
	// StatusSignature: the unit's signature on a status does not verify,
	// is not over this status and container, or is not by the unit's
	// registered certificate.
	StatusSignature Code = "status.signature"
	// StatusUnsigned: a status without the unit's signature, where the
	// hub requires one (pipeline unsigned_statuses: refuse).
	StatusUnsigned Code = "status.unsigned"
)

// Witnessing the hub's transparency log (the hub's answers to agents).
const (
	WitnessInvalid     Code = "witness.invalid"      // a malformed or oversized request
	WitnessRate        Code = "witness.rate"         // the unit sends requests faster than its limit
	WitnessNoKey       Code = "witness.no_key"       // no witness key is registered for the unit
	WitnessKeyMismatch Code = "witness.key_mismatch" // the unit registered another witness key
	WitnessCosignature Code = "witness.cosignature"  // the cosignature does not verify over the checkpoint
	WitnessCheckpoint  Code = "witness.checkpoint"   // not a checkpoint the hub offered for cosigning (or no longer)
	WitnessBeyondLog   Code = "witness.beyond_log"   // a size larger than the log: the log is smaller than a checkpoint it signed (rolled back)
	WitnessUnavailable Code = "witness.unavailable"  // the hub's log cannot answer now
)

// Reason is one failure: a stable code and a human-readable message.
type Reason struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (r Reason) String() string { return string(r.Code) + ": " + r.Message }

// List is a set of reasons; as an error it reads as all of them.
type List []Reason

// Add appends a reason.
func (l *List) Add(c Code, msg string) { *l = append(*l, Reason{c, msg}) }

// Transient reports whether c says nothing about the document itself but
// about the verifier's state (a CRL past its nextUpdate): the check must be
// made again later, and the document is never rejected for it.
func (c Code) Transient() bool { return c == SignatureCRLStale }

// Has reports whether l holds code c.
func (l List) Has(c Code) bool {
	for _, r := range l {
		if r.Code == c {
			return true
		}
	}
	return false
}

// Codes returns the codes of l in order.
func (l List) Codes() []Code {
	cs := make([]Code, len(l))
	for i, r := range l {
		cs[i] = r.Code
	}
	return cs
}

// Err returns l as an error, or nil when empty.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

func (l List) Error() string {
	s := make([]string, len(l))
	for i, r := range l {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}
