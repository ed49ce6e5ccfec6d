// Package edxml reads and writes edXML packets, the message format of the
// national technical regulation QCVN 102:2016/BTTTT that Vietnam's document
// exchange axes speak: document packets (header, trace list, manifest and
// base64 attachments) and status packets. A document packet maps to edx's
// document.json (package document) plus its files, and back.
//
// Reading is tolerant where real peers differ and strict where safety needs
// it. Elements are matched by local name, whatever their prefix or namespace,
// in any order; dates may be written yyyy/MM/dd, yyyy-MM-dd or dd/MM/yyyy;
// attachments that a sender zipped are kept as sent (the bytes decide their
// type, not the manifest). A DOCTYPE or entity declaration is refused, and the
// packet size, element depth and count, attributes, the text of each field
// and the number of attachments are bounded. Attachment content is decoded
// from base64 as it streams past, into a writer the caller chooses, so a
// packet of hundreds of MiB takes a few KiB of memory; no field is ever held
// whole except those document.json keeps.
//
// Nothing read is lost: every element without a document.json field (the
// sender's address, trace headers, attachment descriptions, a peer's own
// extensions ...) is kept in document.json's edxml_extra with the path of its
// parent, in a canonical form (known children in the national SDK's order,
// edXML-namespace elements unprefixed, whitespace between elements dropped),
// so packets that differ only in shape give the same document.json, and Write
// puts every kept element back where it was. Attributes of the known envelope
// elements (SOAP leftovers such as TraceHeaderList's id, xlink bindings of the
// manifest) carry no document data and are not kept; the manifest is
// regenerated from the attachments.
//
// Writing is deterministic: the national SDK's child order, the edXML prefix,
// UTF-8, dates yyyy/MM/dd, base64 streamed from the files.
package edxml

import (
	"errors"
	"fmt"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Namespace is the XML namespace of QCVN 102:2016; Write binds it to the
// prefix edXML.
const Namespace = "http://www.mic.gov.vn/TBT/QCVN_102_2016"

// Limits bound what a packet may hold. A zero field takes its default.
type Limits struct {
	MaxPacket      int64 // bytes of the whole packet
	MaxDepth       int   // element nesting
	MaxElements    int   // elements in the packet
	MaxAttrs       int   // attributes of one element
	MaxText        int   // bytes of one field's text (attachment content excepted)
	MaxAttachments int   // attachments in one packet
	MaxExtra       int   // bytes of kept elements (edxml_extra) in total
}

// DefaultLimits suit official documents: a packet carries at most a few
// hundred MiB of attachments (edx's containers hold 256 MiB; base64 adds a
// third).
var DefaultLimits = Limits{
	MaxPacket:      512 << 20,
	MaxDepth:       32,
	MaxElements:    100000,
	MaxAttrs:       64,
	MaxText:        1 << 20,
	MaxAttachments: 1000,
	MaxExtra:       document.MaxEdXMLExtraBytes,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxPacket != 0 {
		d.MaxPacket = l.MaxPacket
	}
	if l.MaxDepth != 0 {
		d.MaxDepth = l.MaxDepth
	}
	if l.MaxElements != 0 {
		d.MaxElements = l.MaxElements
	}
	if l.MaxAttrs != 0 {
		d.MaxAttrs = l.MaxAttrs
	}
	if l.MaxText != 0 {
		d.MaxText = l.MaxText
	}
	if l.MaxAttachments != 0 {
		d.MaxAttachments = l.MaxAttachments
	}
	if l.MaxExtra != 0 {
		d.MaxExtra = l.MaxExtra
	}
	return d
}

// Validate reports a limit that cannot work.
func (l Limits) Validate() error {
	l = l.withDefaults()
	switch {
	case l.MaxPacket < 1024:
		return fmt.Errorf("edxml: limits: max packet %d bytes is too small", l.MaxPacket)
	case l.MaxDepth < 8:
		return fmt.Errorf("edxml: limits: max depth %d is below the envelope's own depth", l.MaxDepth)
	case l.MaxElements < 16 || l.MaxAttrs < 1 || l.MaxText < 256 || l.MaxAttachments < 1 || l.MaxExtra < 0:
		return fmt.Errorf("edxml: limits: %+v: too small to read a packet", l)
	case l.MaxExtra > document.MaxEdXMLExtraBytes:
		return fmt.Errorf("edxml: limits: max extra %d is above what document.json holds (%d)", l.MaxExtra, document.MaxEdXMLExtraBytes)
	}
	return nil
}

// Error is a packet that cannot be read: a stable reason code, the path of
// the element at fault (e.g. /edXML/AttachmentEncoded/Attachment[2]/
// ContentTransferEncoded) and what is wrong.
type Error struct {
	Code reason.Code
	Path string
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	s := "edxml: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Reason returns e as a reason for a rejection.
func (e *Error) Reason() reason.Reason { return reason.Reason{Code: e.Code, Message: e.Error()} }

// ErrStatusPacket is wrapped by Parse's error when the packet is a status
// packet; read it with ParseStatus.
var ErrStatusPacket = errors.New("a status packet: read it as a status")

// ErrDocumentPacket is wrapped by ParseStatus's error when the packet is not
// a status packet.
var ErrDocumentPacket = errors.New("not a status packet (no StatusCode)")

func errf(code reason.Code, path, format string, a ...any) *Error {
	return &Error{Code: code, Path: path, Msg: fmt.Sprintf(format, a...)}
}
