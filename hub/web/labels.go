package web

import (
	"html/template"

	"github.com/edxhub/edx/pkg/document"
)

// labels are the UI's words, Vietnamese first and English after: records
// staff read the first, visitors and auditors from elsewhere the second.
var labels = map[string][2]string{
	"app":              {"Trục liên thông văn bản", "Document exchange hub"},
	"search":           {"Tìm kiếm", "Search"},
	"units":            {"Đơn vị", "Units"},
	"my_unit":          {"Đơn vị của tôi", "My unit"},
	"audit":            {"Kiểm tra chữ ký", "Verify a container"},
	"users":            {"Người dùng", "Users"},
	"account":          {"Tài khoản", "Account"},
	"sign_in":          {"Đăng nhập", "Sign in"},
	"sign_out":         {"Đăng xuất", "Sign out"},
	"user_name":        {"Tên đăng nhập", "User name"},
	"password":         {"Mật khẩu", "Password"},
	"keywords":         {"Từ khóa", "Keywords"},
	"sender":           {"Cơ quan gửi", "Sender"},
	"recipient":        {"Nơi nhận", "Recipient"},
	"recipients":       {"Nơi nhận", "Recipients"},
	"doc_type":         {"Loại văn bản", "Document type"},
	"number":           {"Số", "Number"},
	"number_notation":  {"Số, ký hiệu", "Number and notation"},
	"signer":           {"Người ký", "Signer"},
	"status":           {"Trạng thái", "Status"},
	"accepted_from":    {"Tiếp nhận từ ngày", "Accepted from"},
	"accepted_to":      {"đến ngày", "to"},
	"sort":             {"Sắp xếp", "Sort"},
	"sort_new":         {"Mới tiếp nhận trước", "Newest first"},
	"sort_old":         {"Cũ trước", "Oldest first"},
	"sort_prom":        {"Theo ngày ban hành", "By promulgation date"},
	"sort_rel":         {"Phù hợp nhất", "Best match"},
	"any":              {"Tất cả", "Any"},
	"found":            {"Tìm thấy", "Found"},
	"count_capped":     {"Đếm tối đa 10.000 văn bản, trong 250.000 văn bản tiếp nhận gần nhất của khoảng ngày; thu hẹp khoảng ngày để đếm đủ.", "Counted up to 10,000 matches among the newest 250,000 documents of the dates; narrow the dates for a full count."},
	"ranked_among":     {"Xếp theo mức phù hợp trong", "Best match among the"},
	"ranked_newest":    {"văn bản tiếp nhận gần nhất; thu hẹp khoảng ngày để xếp hạng các văn bản cũ hơn.", "newest matches; narrow the dates to rank older ones."},
	"documents":        {"văn bản", "documents"},
	"next_page":        {"Trang sau", "Next page"},
	"first_page":       {"Trang đầu", "First page"},
	"no_results":       {"Không có văn bản phù hợp.", "No matching document."},
	"subject":          {"Trích yếu", "Subject"},
	"accepted_at":      {"Tiếp nhận lúc", "Accepted at"},
	"promulgated":      {"Ngày ban hành", "Promulgated"},
	"place":            {"Địa danh", "Place"},
	"urgency":          {"Độ khẩn", "Urgency"},
	"due_date":         {"Hạn xử lý", "Due date"},
	"in_reply_to":      {"Trả lời văn bản", "In reply to"},
	"business_type":    {"Loại nghiệp vụ", "Business type"},
	"document_id":      {"Mã văn bản", "Document id"},
	"metadata":         {"Thông tin văn bản", "Metadata"},
	"files":            {"Tệp đính kèm", "Files"},
	"file":             {"Tệp", "File"},
	"media_type":       {"Kiểu", "Type"},
	"size":             {"Dung lượng", "Size"},
	"download":         {"Tải về", "Download"},
	"container":        {"Gói văn bản đã ký (.asice)", "Signed container (.asice)"},
	"receipt":          {"Biên nhận của trục (.p7s)", "Hub receipt (.p7s)"},
	"signature":        {"Chữ ký số", "Digital signature"},
	"valid":            {"HỢP LỆ", "VALID"},
	"invalid":          {"KHÔNG HỢP LỆ", "INVALID"},
	"cert_subject":     {"Chứng thư số", "Certificate"},
	"cert_serial":      {"Số sê-ri", "Serial"},
	"cert_validity":    {"Hiệu lực", "Validity"},
	"signer_unit":      {"Đơn vị ký", "Signing unit"},
	"chain":            {"Chuỗi chứng thực", "Certificate chain"},
	"signing_time":     {"Thời điểm ký (do người ký khai)", "Signing time (claimed by the signer)"},
	"checked_at":       {"Kiểm tra chuỗi tại thời điểm", "Chain checked at"},
	"verified_now":     {"Kiểm tra lại lúc", "Re-verified at"},
	"reasons":          {"Lý do", "Reasons"},
	"receipt_check":    {"Biên nhận", "Receipt"},
	"archive_check":    {"Lưu trữ", "Archive"},
	"archive_matches":  {"Gói lưu trữ đúng là gói đã tiếp nhận", "The archive holds the container accepted"},
	"check_now":        {"Kiểm tra tại thời điểm hiện tại", "Check as of now"},
	"check_accepted":   {"Kiểm tra tại thời điểm tiếp nhận", "Check as of acceptance"},
	"timeline":         {"Diễn biến xử lý", "Status timeline"},
	"delivery":         {"Tình trạng chuyển", "Delivery"},
	"state":            {"Tình trạng", "State"},
	"delivered_at":     {"Đã chuyển lúc", "Delivered at"},
	"last_status":      {"Trạng thái mới nhất", "Latest status"},
	"done":             {"Kết thúc", "Closed"},
	"ev_accepted":      {"Trục tiếp nhận, xác minh chữ ký và lưu trữ", "Accepted, verified and archived by the hub"},
	"ev_delivered":     {"Đã chuyển đến", "Delivered to"},
	"out_of_order":     {"sai trình tự", "out of order"},
	"officer":          {"Cán bộ xử lý", "Handling officer"},
	"sent":             {"Đã gửi", "Sent"},
	"received":         {"Đã nhận", "Received"},
	"pending":          {"Đang xử lý", "Pending"},
	"overdue":          {"Quá hạn", "Overdue"},
	"undelivered":      {"Chưa chuyển được", "Not yet delivered"},
	"recent_sent":      {"Văn bản gửi gần đây", "Recently sent"},
	"recent_received":  {"Văn bản nhận gần đây", "Recently received"},
	"see_all":          {"Xem tất cả", "See all"},
	"unit_id":          {"Mã định danh", "Unit id"},
	"unit_name":        {"Tên đơn vị", "Name"},
	"registered":       {"Ngày đăng ký", "Registered"},
	"disabled":         {"Ngừng hoạt động", "Disabled"},
	"active":           {"Hoạt động", "Active"},
	"upload_container": {"Gói văn bản (.asice)", "Container (.asice)"},
	"upload_receipt":   {"Biên nhận (.p7s, không bắt buộc)", "Receipt (.p7s, optional)"},
	"check_at":         {"Kiểm tra chuỗi chứng thực tại", "Check the chain at"},
	"at_now":           {"thời điểm hiện tại", "now"},
	"at_accepted":      {"thời điểm trục tiếp nhận (theo biên nhận)", "acceptance, per the receipt"},
	"verify":           {"Kiểm tra", "Verify"},
	"report":           {"Kết quả kiểm tra", "Verification report"},
	"audit_intro":      {"Tải lên một gói văn bản đã ký (và biên nhận của trục) để kiểm tra chữ ký, chuỗi chứng thực, tính toàn vẹn của từng tệp và biên nhận, theo các chứng thư gốc tin cậy của trục.", "Upload a signed container (and the hub's receipt) to check its signature, chain, every file's integrity and the receipt against the hub's trust roots."},
	"role":             {"Vai trò", "Role"},
	"role_staff":       {"Văn thư đơn vị", "Records staff"},
	"role_archivist":   {"Lưu trữ viên", "Archivist"},
	"role_auditor":     {"Kiểm toán viên", "Auditor"},
	"role_admin":       {"Quản trị", "Administrator"},
	"display_name":     {"Họ tên", "Full name"},
	"last_sign_in":     {"Đăng nhập gần nhất", "Last sign-in"},
	"add_user":         {"Thêm người dùng", "Add a user"},
	"unit":             {"Đơn vị", "Unit"},
	"password_blank":   {"Để trống để tạo ngẫu nhiên", "Leave empty to generate one"},
	"create":           {"Tạo", "Create"},
	"save":             {"Lưu", "Save"},
	"disable":          {"Khóa", "Disable"},
	"enable":           {"Mở khóa", "Enable"},
	"reset_password":   {"Đặt lại mật khẩu", "Reset password"},
	"new_password":     {"Mật khẩu mới", "New password"},
	"current_password": {"Mật khẩu hiện tại", "Current password"},
	"repeat_password":  {"Nhập lại mật khẩu mới", "Repeat the new password"},
	"change_password":  {"Đổi mật khẩu", "Change password"},
	"tokens":           {"Khóa API cho máy", "API tokens for machines"},
	"token_name":       {"Tên khóa", "Token name"},
	"expires":          {"Hết hạn", "Expires"},
	"last_used":        {"Dùng gần nhất", "Last used"},
	"revoke":           {"Thu hồi", "Revoke"},
	"new_token":        {"Tạo khóa API", "Create a token"},
	"secret_once":      {"Sao chép ngay: giá trị này chỉ hiện một lần.", "Copy it now: it is shown only once."},
	"days_30":          {"30 ngày", "30 days"},
	"days_90":          {"90 ngày", "90 days"},
	"days_365":         {"1 năm", "1 year"},
	"actions":          {"Thao tác", "Actions"},
	"error":            {"Lỗi", "Error"},
	"not_found":        {"Không tìm thấy", "Not found"},
	"forbidden":        {"Không có quyền", "Not allowed"},
	"busy":             {"Trục đang kiểm tra nhiều văn bản cùng lúc, vui lòng thử lại sau giây lát", "The hub is verifying as many containers as it may at once; try again shortly"},
	"bad_sign_in":      {"Sai tên đăng nhập hoặc mật khẩu.", "Wrong user name or password."},
	"rate_limited":     {"Đăng nhập sai quá nhiều lần, vui lòng thử lại sau.", "Too many attempts: try again later."},
	"form_expired":     {"Biểu mẫu đã hết hạn, vui lòng thử lại.", "The form expired: please try again."},
	"signed_in_as":     {"Đăng nhập với", "Signed in as"},
	"content_hidden":   {"Vai trò của bạn xem siêu dữ liệu và kết quả kiểm tra, không xem nội dung tệp.", "Your role sees metadata and reports, not file content."},
	"pdf_fallback":     {"Trình duyệt không hiển thị được PDF:", "The browser cannot show the PDF:"},
	"no_items":         {"Không có.", "None."},
	"verified_accept":  {"Chữ ký đã được trục xác minh khi tiếp nhận.", "The hub verified the signature on acceptance."},
	"password_changed": {"Đã đổi mật khẩu.", "Password changed."},
	"passwords_differ": {"Hai mật khẩu mới không giống nhau.", "The new passwords differ."},
	"wrong_password":   {"Mật khẩu hiện tại không đúng.", "The current password is wrong."},
	"user_created":     {"Đã tạo người dùng", "User created"},
	"user_changed":     {"Đã cập nhật người dùng", "User changed"},
	"token_revoked":    {"Đã thu hồi khóa.", "Token revoked."},
	"classified_none":  {"Thường", "Normal"},
}

// L is a label for HTML: Vietnamese, then English in a quieter span.
func L(key string) template.HTML {
	l, ok := labels[key]
	if !ok {
		return template.HTML(template.HTMLEscapeString(key))
	}
	return template.HTML(template.HTMLEscapeString(l[0]) + ` <span class="en" lang="en">` + template.HTMLEscapeString(l[1]) + `</span>`)
}

// T is a label as plain text ("Vietnamese / English"), for attributes and
// options.
func T(key string) string {
	l, ok := labels[key]
	if !ok {
		return key
	}
	return l[0] + " / " + l[1]
}

var urgencies = map[document.Urgency][2]string{
	document.UrgencyNormal:     {"Thường", "normal"},
	document.UrgencyUrgent:     {"Khẩn", "urgent"},
	document.UrgencyVeryUrgent: {"Thượng khẩn", "very urgent"},
	document.UrgencyFlash:      {"Hỏa tốc", "flash"},
	document.UrgencyFlashTimed: {"Hỏa tốc hẹn giờ", "flash, at a set time"},
}

var businessTypes = map[document.BusinessType][2]string{
	document.BusinessNew:     {"Văn bản mới", "new"},
	document.BusinessRevoke:  {"Thu hồi", "revoke"},
	document.BusinessUpdate:  {"Cập nhật", "update"},
	document.BusinessReplace: {"Thay thế", "replace"},
}

var statusCodes = []document.StatusCode{
	document.StatusDelivered, document.StatusRefused, document.StatusAccepted, document.StatusAssigned,
	document.StatusInProgress, document.StatusFinished, document.StatusCancelled, document.StatusChangeAccept,
	document.StatusChangeRefused,
}
