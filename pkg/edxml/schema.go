package edxml

// The shape of the packets as the national SDK writes them: each element's
// known children in order. The reader matches children by local name in any
// order; the writer writes them in this order; kept elements are sorted into
// it, so packets that differ only in order give the same document.json.

type kind int

const (
	kGroup    kind = iota // element with children
	kText                 // text
	kDate                 // a date
	kTime                 // a date and time
	kInt                  // an integer
	kRaw                  // known, kept whole as XML
	kContent              // an attachment's base64 content, streamed
	kStatus               // marks a status packet
	kDocument             // marks a document packet
	kDrop                 // dropped when empty, else kept whole (SOAP Body)
)

type field int

// Fields a leaf maps to. Those after fKept are kept in edxml_extra as well as
// read.
const (
	fNone field = iota
	fFrom
	fFromName
	fTo
	fNumber
	fNotation
	fPlace
	fPromulgated
	fTypeName
	fSubject
	fContent
	fCompetence
	fPosition
	fFullName
	fDue
	fPlaces
	fPriority
	fSphere
	fPages
	fSteering
	fEdXMLID
	fBusiness

	// Status packets.
	sFromID
	sFromInCharge
	sFromName
	sFromAdd
	sFromEmail
	sFromTel
	sFromFax
	sFromWeb
	sRespOrgan
	sRespCode
	sRespDate
	sRespDocID
	sDept
	sStaff
	sEmail
	sMobile
	sCode
	sDesc
	sTime

	fKept
	fType     // mapped when a known code, else kept (e.g. a numeric type)
	fReplyDoc // ResponseFor/DocumentId: kept, and resolved to in_reply_to
	fAttID    // attachment fields: kept, and read for the attachment list
	fAttName  //
	fAttDesc  //
	fAttType  //
)

// elem is one element of a packet's shape.
type elem struct {
	name   string
	kind   kind
	repeat bool   // may occur many times; its path carries [i]
	field  field  // the field a leaf maps to
	keep   bool   // keep the text as is (else trimmed)
	canon  string // path segment(s) it stands for when not its name; "." for its parent's
	alias  bool   // read only: never written
	always bool   // written even when empty
	kids   []*elem
}

// kid returns the child named local and its position.
func (e *elem) kid(local string) (*elem, int) {
	for i, k := range e.kids {
		if k.name == local {
			return k, i
		}
	}
	return nil, len(e.kids)
}

// mapped reports whether the writer takes the leaf's value from the
// document alone (a kept element of that name would be written twice).
func (e *elem) mapped() bool { return e.field != fNone && e.field < fKept }

// segment is the element's path segment.
func (e *elem) segment() string {
	if e.canon != "" {
		return e.canon
	}
	return e.name
}

func group(name string, kids ...*elem) *elem { return &elem{name: name, kind: kGroup, kids: kids} }
func text(name string, f field) *elem        { return &elem{name: name, kind: kText, field: f} }
func date(name string, f field) *elem        { return &elem{name: name, kind: kDate, field: f} }
func stamp(name string, f field) *elem       { return &elem{name: name, kind: kTime, field: f} }
func number(name string, f field) *elem      { return &elem{name: name, kind: kInt, field: f} }
func raw(name string) *elem                  { return &elem{name: name, kind: kRaw} }
func many(e *elem) *elem                     { e.repeat = true; return e }
func always(e *elem) *elem                   { e.always = true; return e }
func verbatim(e *elem) *elem                 { e.keep = true; return e }

func organ(id, name field) []*elem {
	return []*elem{
		text("OrganId", id),
		text("OrganizationInCharge", 0),
		text("OrganName", name),
		text("OrganAdd", 0),
		text("Email", 0),
		text("Telephone", 0),
		text("Fax", 0),
		text("Website", 0),
	}
}

// Paths of the document packet the codec works with.
const (
	rootPath        = "/edXML"
	headerPath      = "/edXML/edXMLEnvelope/edXMLHeader"
	messagePath     = headerPath + "/MessageHeader"
	docTypePath     = messagePath + "/DocumentType"
	responseForPath = messagePath + "/ResponseFor"
	tracePath       = headerPath + "/TraceHeaderList"
	attachmentPath  = "/edXML/AttachmentEncoded/Attachment"
)

var (
	referenceElem = many(raw("Reference"))

	packetSchema = group("edXML",
		always(group("edXMLEnvelope",
			always(group("edXMLHeader",
				always(group("MessageHeader",
					always(group("From", organ(fFrom, fFromName)...)),
					always(many(group("To", organ(fTo, 0)...))),
					group("Code", text("CodeNumber", fNumber), text("CodeNotation", fNotation)),
					group("PromulgationInfo", text("Place", fPlace), date("PromulgationDate", fPromulgated)),
					group("DocumentType", text("Type", fType), text("TypeDetail", 0), text("TypeName", fTypeName)),
					text("Subject", fSubject),
					verbatim(text("Content", fContent)),
					group("SignerInfo", text("Competence", fCompetence), text("Position", fPosition), text("FullName", fFullName)),
					date("DueDate", fDue),
					group("ToPlaces", many(text("Place", fPlaces))),
					always(group("OtherInfo",
						number("Priority", fPriority),
						text("SphereOfPromulgation", fSphere),
						text("TyperNotation", 0),
						text("PromulgationAmount", 0),
						number("PageAmount", fPages),
						group("Appendixes", many(text("Appendix", 0))),
					)),
					many(group("ResponseFor", text("OrganId", 0), text("Code", 0), date("PromulgationDate", 0), text("DocumentId", fReplyDoc))),
					text("SteeringType", fSteering),
					text("DocumentId", fEdXMLID),
					&elem{name: "StatusCode", kind: kStatus},
					&elem{name: "Status", kind: kStatus},
				)),
				always(group("TraceHeaderList",
					many(group("TraceHeader", text("OrganId", 0), stamp("Timestamp", 0))),
					always(group("Bussiness",
						text("DocumentId", 0),
						number("BussinessDocType", fBusiness),
						verbatim(text("BussinessDocReason", 0)),
						text("Paper", 0),
						raw("BussinessDocumentInfo"),
						raw("ReplacementInfoList"),
						group("StaffInfo", text("Department", 0), text("Staff", 0), text("Mobile", 0), text("Email", 0)),
					)),
				)),
				raw("Signature"),
				&elem{name: "Status", kind: kStatus},
			)),
			always(group("edXMLBody",
				always(group("edXMLManifest", referenceElem)),
			)),
		)),
		group("AttachmentEncoded",
			many(group("Attachment",
				text("ContentId", fAttID),
				text("AttachmentName", fAttName),
				verbatim(text("Description", fAttDesc)),
				text("ContentType", fAttType),
				&elem{name: "ContentTransferEncoded", kind: kContent},
			)),
		),
	)
)

// The status packet: written in the MessageHeader form of the national SDK,
// read also in the Status form of provincial hubs, bare or in a SOAP
// envelope.
var (
	statusFields = []*elem{
		group("From",
			text("OrganId", sFromID),
			text("OrganizationInCharge", sFromInCharge),
			text("OrganName", sFromName),
			text("OrganAdd", sFromAdd),
			text("Email", sFromEmail),
			text("Telephone", sFromTel),
			text("Fax", sFromFax),
			text("Website", sFromWeb),
		),
		group("ResponseFor", text("OrganId", sRespOrgan), text("Code", sRespCode), date("PromulgationDate", sRespDate), text("DocumentId", sRespDocID)),
		group("StaffInfo", text("Department", sDept), text("Staff", sStaff), text("Email", sEmail), text("Mobile", sMobile)),
		text("StatusCode", sCode),
		verbatim(text("Description", sDesc)),
		stamp("Timestamp", sTime),
	}
	statusMessage = always(group("MessageHeader", statusFields...))
	statusWrapper = &elem{name: "Status", kind: kGroup, canon: ".", alias: true, kids: statusFields}
	statusAlias   = &elem{name: "Status", kind: kGroup, canon: "MessageHeader", alias: true, kids: statusFields}

	statusHeader = always(group("edXMLHeader", statusMessage, statusAlias,
		group("TraceHeaderList", many(group("TraceHeader", text("OrganId", 0), stamp("Timestamp", 0)))),
	))
	statusSchema = group("edXML",
		always(group("edXMLEnvelope",
			statusHeader,
			&elem{name: "Header", kind: kGroup, canon: "edXMLHeader", alias: true, kids: statusHeader.kids},
			&elem{name: "edXMLBody", kind: kDrop, alias: true},
		)),
		&elem{name: "Header", kind: kGroup, canon: "edXMLEnvelope/edXMLHeader", alias: true, kids: statusHeader.kids},
		&elem{name: "Body", kind: kDrop, alias: true},
		&elem{name: "AttachmentEncoded", kind: kDocument},
	)
)

func init() {
	// A Status element inside MessageHeader stands for it.
	statusMessage.kids = append(statusMessage.kids, statusWrapper)
	statusWrapper.kids = statusMessage.kids
	statusAlias.kids = statusMessage.kids
}
