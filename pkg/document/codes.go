package document

// DocType is an administrative document kind (loại văn bản) of Decree 30/2020.
type DocType struct {
	Code string // short code used in the notation, e.g. "QĐ"
	Name string // Vietnamese name, e.g. "Quyết định"
	En   string // English name
}

// DocTypes is the one list of document kinds edx knows, keyed by Code.
var DocTypes = []DocType{
	{"NQ", "Nghị quyết", "Resolution"},
	{"QĐ", "Quyết định", "Decision"},
	{"CT", "Chỉ thị", "Directive"},
	{"QC", "Quy chế", "Regulation"},
	{"QYĐ", "Quy định", "Rule"},
	{"TC", "Thông cáo", "Communiqué"},
	{"TB", "Thông báo", "Notice"},
	{"HD", "Hướng dẫn", "Guidance"},
	{"CTr", "Chương trình", "Programme"},
	{"KH", "Kế hoạch", "Plan"},
	{"PA", "Phương án", "Scheme"},
	{"ĐA", "Đề án", "Project proposal"},
	{"DA", "Dự án", "Project"},
	{"BC", "Báo cáo", "Report"},
	{"BB", "Biên bản", "Minutes"},
	{"TTr", "Tờ trình", "Submission"},
	{"HĐ", "Hợp đồng", "Contract"},
	{"CV", "Công văn", "Official letter"},
	{"CĐ", "Công điện", "Official dispatch"},
	{"BGN", "Bản ghi nhớ", "Memorandum"},
	{"BTT", "Bản thỏa thuận", "Agreement"},
	{"GUQ", "Giấy ủy quyền", "Power of attorney"},
	{"GM", "Giấy mời", "Invitation"},
	{"GGT", "Giấy giới thiệu", "Letter of introduction"},
	{"GNP", "Giấy nghỉ phép", "Leave permit"},
	{"PG", "Phiếu gửi", "Dispatch slip"},
	{"PC", "Phiếu chuyển", "Transfer slip"},
	{"PB", "Phiếu báo", "Notification slip"},
	{"TCg", "Thư công", "Official mail"},
}

// LookupDocType returns the document kind with the given code.
func LookupDocType(code string) (DocType, bool) {
	for _, t := range DocTypes {
		if t.Code == code {
			return t, true
		}
	}
	return DocType{}, false
}

// BusinessType is edXML's BussinessDocType (loại nghiệp vụ).
type BusinessType int

const (
	BusinessNew     BusinessType = 0
	BusinessRevoke  BusinessType = 1
	BusinessUpdate  BusinessType = 2
	BusinessReplace BusinessType = 3
)

// Urgency is độ khẩn (edXML OtherInfo/Priority).
type Urgency int

const (
	UrgencyNormal     Urgency = 0 // thường
	UrgencyUrgent     Urgency = 1 // khẩn
	UrgencyVeryUrgent Urgency = 2 // thượng khẩn
	UrgencyFlash      Urgency = 3 // hỏa tốc
	UrgencyFlashTimed Urgency = 4 // hỏa tốc hẹn giờ: flash, at a set time
)

// Confidentiality is độ mật (Decree 30). Only None may travel on this network.
type Confidentiality int

const (
	ConfidentialityNone      Confidentiality = 0
	ConfidentialitySecret    Confidentiality = 1 // mật
	ConfidentialityTopSecret Confidentiality = 2 // tối mật
	ConfidentialityAbsolute  Confidentiality = 3 // tuyệt mật
)

// Competence is thẩm quyền ký.
var Competences = []string{"", "TM.", "KT.", "TL.", "TUQ."}
