// Package axis is the client protocol of Vietnam's national document
// exchange axis (VDXP) as its published SDKs speak it: the calls, the
// XroadVnpt-* HMAC authentication of each request, and the JSON answers. The
// agent serves it (agent/axis) so that a document system built on the
// axis's SDK reaches edx by changing its endpoint, system id and secret; a
// client of a real axis (a bridge) signs its calls with the same code.
//
// How a call travels (checked against the national Java SDK, SDKVXP 2.0.1):
// a POST (a few GETs) to <endpoint>/<call>; the call's parameters are
// headers, each sent as XroadVnpt-<name> only (Content-Type is also sent
// plain); the names are listed, joined by ";", in XroadVnpt-sign-header-key;
// a JSON object of the XroadVnpt-<name> → value pairs is sent in
// XroadVnpt-sign-header and its HMAC-SHA256, keyed with the system's shared
// secret and written in lower-case hex, in XroadVnpt-hash-header. The
// parameters always include systemid and timestamp (ddMMyyyy'T'HHmmss+SSSS,
// local time, SSSS the milliseconds). sendEdoc also signs hash-file, the
// SHA-256 of the packet it uploads, in hex without leading zeros per byte
// (the SDK's own spelling; FileHash accepts both spellings). A verifier
// hashes the sign header it received, byte for byte: never a
// re-serialisation.
//
// This package does not log; it holds no state (replay memory and rates are
// the server's).
package axis

import (
	"encoding/json"
	"strings"
)

// Header names of the authentication.
const (
	Prefix        = "XroadVnpt-"
	SignHeader    = "XroadVnpt-sign-header"
	HashHeader    = "XroadVnpt-hash-header"
	SignHeaderKey = "XroadVnpt-sign-header-key"
	VersionHeader = "XroadVnpt-version"
	// Version is what the national SDK sends in XroadVnpt-version.
	Version = "3.0.201608"
)

// Parameter names (unprefixed) the calls use. Lookups are case-insensitive:
// the SDK writes docId for getEdoc and docid for updateStatus.
const (
	ParamSystemID    = "systemid"
	ParamTimestamp   = "timestamp"
	ParamFrom        = "from"
	ParamTo          = "to"
	ParamServiceType = "servicetype"
	ParamMessageType = "messagetype"
	ParamDocID       = "docId"
	ParamStatus      = "status"
	ParamFileHash    = "hash-file"
	ParamContentType = "Content-Type"
)

// Calls of the client protocol.
const (
	CallSendEdoc            = "sendEdoc"
	CallGetReceivedEdocList = "getReceivedEdocList"
	CallGetSentEdocList     = "getSentEdocList"
	CallGetEdoc             = "getEdoc"
	CallUpdateStatus        = "updateStatus"
	CallGetAgenciesList     = "getAgenciesList"
	CallCountReceiveEdoc    = "countReceiveEdoc"
	CallCountReceiveStatus  = "countReceiveStatus"
)

// ServiceEdoc is the servicetype of document exchange calls.
const ServiceEdoc = "eDoc"

// Message types (the messagetype parameter).
const (
	MessageEdoc   = "edoc"   // a document packet
	MessageStatus = "status" // a status packet (codes 01–16)
)

// Transport statuses of updateStatus: the document system's
// acknowledgement of an item it fetched, distinct from the business status
// codes 01–16 that travel as status packets.
const (
	TransportDone       = "done"       // taken: not listed again
	TransportFail       = "fail"       // could not take it: listed again
	TransportProcessing = "processing" // taking it: listed again
	TransportInitial    = "initial"    // listed, not yet acknowledged
)

// FileField is the multipart part of sendEdoc that holds the packet.
const FileField = "file_doc"

// Answer statuses.
const (
	StatusOK   = "OK"
	StatusFail = "FAIL"
)

// Code is an answer's ErrorCode: 0 is success. The national axis does not
// publish its codes; these are edx's, stable, and a client tells success by
// status OK and ErrorCode 0 (as the SDK does).
type Code int

const (
	CodeOK           Code = 0
	CodeUnknownCall  Code = 1  // no such call
	CodeUnauthorized Code = 2  // missing or bad signature headers, unknown system id, wrong hash
	CodeStale        Code = 3  // timestamp outside the window, or a signature already used
	CodeBadRequest   Code = 4  // a parameter missing or malformed, an unreadable packet
	CodeNotFound     Code = 5  // no such document or status
	CodeRefused      Code = 6  // well-formed but refused (another unit's document, a status out of place)
	CodeTooLarge     Code = 7  // the request exceeds the size limit
	CodeTooMany      Code = 8  // too many requests from this system: slow down
	CodeInternal     Code = 9  // the agent failed; try again later
	CodeConflict     Code = 10 // the same id was used for other content
)

// Answer is the JSON answer of every call.
type Answer struct {
	Status    string `json:"status"`
	ErrorCode Code   `json:"ErrorCode"`
	ErrorDesc string `json:"ErrorDesc"`
	DocID     string `json:"DocId,omitempty"`
	Data      any    `json:"data,omitempty"`
	Count     *int   `json:"count,omitempty"`
}

// OK returns a success answer.
func OK() Answer { return Answer{Status: StatusOK, ErrorCode: CodeOK, ErrorDesc: "Success"} }

// Fail returns a failure answer.
func Fail(code Code, desc string) Answer {
	return Answer{Status: StatusFail, ErrorCode: code, ErrorDesc: desc}
}

// Item is one entry of getReceivedEdocList: a document or a status waiting
// for the document system. Times are RFC 3339.
type Item struct {
	DocID       string `json:"docId"`
	ServiceType string `json:"serviceType"`
	MessageType string `json:"messageType"`
	CreatedTime string `json:"created_time"`
	UpdatedTime string `json:"updated_time"`
	From        string `json:"from"`
	To          string `json:"to"`
	Status      string `json:"status"`      // transport status: initial, processing, fail
	StatusDesc  string `json:"status_desc"` // for a status item, its code and name (e.g. "03 Đã tiếp nhận")
}

// SentItem is one entry of getSentEdocList: a sent document and one
// recipient's progress.
type SentItem struct {
	ServiceType       string `json:"serviceType"`
	MessageType       string `json:"messageType"`
	SenderDocID       string `json:"senderDocId"`
	ReceiverDocID     string `json:"receiverDocId"`
	FromCode          string `json:"fromCode"`
	ToCode            string `json:"toCode"`
	Title             string `json:"title"`
	Notation          string `json:"notation"`
	SentTime          string `json:"sentTime"`
	ReceivedTime      string `json:"receivedTime"`
	SendStatus        string `json:"sendStatus"`
	SendStatusDesc    string `json:"sendStatusDesc"`
	ReceiveStatus     string `json:"receiveStatus"`
	ReceiveStatusDesc string `json:"receiveStatusDesc"`
}

// Agency is one entry of getAgenciesList.
type Agency struct {
	ID   string `json:"id"`
	PID  string `json:"pid"`
	Code string `json:"code"`
	Name string `json:"name"`
	Mail string `json:"mail"`
}

// ParseTo reads the to parameter of sendEdoc: the SDK writes it as the JSON
// of what the document system gave (a string, with its quotes, or an
// array); a plain list separated by commas or semicolons is taken too.
func ParseTo(v string) []string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	var one string
	if json.Unmarshal([]byte(v), &one) == nil {
		v = one
	} else {
		var many []string
		if json.Unmarshal([]byte(v), &many) == nil {
			return trimAll(many)
		}
	}
	return trimAll(strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' }))
}

func trimAll(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
