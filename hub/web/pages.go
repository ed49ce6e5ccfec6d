package web

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
)

func who(r *http.Request) *auth.Identity { return auth.FromContext(r.Context()) }

func statusLabel(c document.StatusCode) string {
	if c.Validate() != nil {
		return string(c)
	}
	return string(c) + " · " + c.Vietnamese() + " / " + c.English()
}

func urgencyLabel(u document.Urgency) string {
	l, ok := urgencies[u]
	if !ok {
		return "?"
	}
	return l[0] + " / " + l[1]
}

func businessLabel(b document.BusinessType) string {
	l, ok := businessTypes[b]
	if !ok {
		return "?"
	}
	return l[0] + " / " + l[1]
}

func roleLabel(r auth.Role) string { return T("role_" + string(r)) }

func docTypeLabel(code string) string {
	if t, ok := document.LookupDocType(code); ok {
		return t.Name + " / " + t.En
	}
	return code
}

// option is an entry of a select.
type option struct {
	Value, Label string
}

// searchData is the search page's.
type searchData struct {
	Form     url.Values
	Types    []option
	Statuses []option
	Units    []index.Unit
	Scope    document.UnitID
	Page     *index.Page
	Next     string // URL of the next page
	First    string // URL of the first page, when not on it
	Searched bool
	Error    string
}

func (u *ui) search(w http.ResponseWriter, r *http.Request) {
	id := who(r)
	v := r.URL.Query()
	d := searchData{Form: v, Scope: id.Scope()}
	for _, t := range document.DocTypes {
		d.Types = append(d.Types, option{t.Code, t.Name + " / " + t.En})
	}
	for _, c := range statusCodes {
		d.Statuses = append(d.Statuses, option{string(c), statusLabel(c)})
	}
	d.Units = u.d.Service.Registered()
	code := http.StatusOK
	q, err := service.ParseQuery(v)
	if err == nil {
		var p index.Page
		if p, err = u.d.Service.Search(r.Context(), id, q); err == nil {
			d.Page, d.Searched = &p, true
			if p.NextCursor != "" {
				nv := cloneValues(v)
				nv.Set("cursor", p.NextCursor)
				d.Next = "/search?" + nv.Encode()
			}
			if v.Get("cursor") != "" {
				fv := cloneValues(v)
				fv.Del("cursor")
				d.First = "/search?" + fv.Encode()
			}
		}
	}
	if err != nil {
		if service.Status(err) >= 500 {
			u.fail(w, r, err)
			return
		}
		d.Error, code = err.Error(), http.StatusBadRequest
	}
	u.render(w, r, code, "search", "search", d)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		for _, x := range vs {
			if x != "" {
				out.Add(k, x)
			}
		}
	}
	return out
}

// event is one line of a document's timeline.
type event struct {
	At      time.Time
	Kind    string // accepted, delivered, status
	Unit    document.UnitID
	Status  *index.StatusEntry
	Flagged bool
}

// autoVerifyMax is the largest container the document page re-verifies on
// every view; larger ones on request.
const autoVerifyMax = 64 << 20

// docData is the document page's.
type docData struct {
	Doc        *service.Document
	Verify     *service.Verification
	VerifyErr  string
	VerifyBusy bool // every verification slot was taken
	At         string
	Content    bool // may read files
	PDF        *index.File
	UnitNames  map[document.UnitID]string
	Timeline   []event
	Recipients []index.Recipient
}

func (u *ui) document(w http.ResponseWriter, r *http.Request) {
	id := who(r)
	docID := document.ID(chi.URLParam(r, "id"))
	doc, err := u.d.Service.Document(r.Context(), id, docID)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	at := r.URL.Query().Get("at")
	if at != service.AtAccepted {
		at = service.AtNow
	}
	d := docData{Doc: doc, At: at, Content: id.Can(auth.ReadContent), UnitNames: map[document.UnitID]string{}}
	// The signature panel is a fresh check of the archived bytes, not what
	// the index remembers; for very large containers, on request.
	if doc.Size <= autoVerifyMax || r.URL.Query().Get("verify") == "1" {
		if d.Verify, err = u.d.Service.Verify(r.Context(), id, docID, at); err != nil {
			switch {
			case errors.Is(err, service.ErrBusy):
				// Not checked now, which says nothing of the signature.
				d.VerifyBusy = true
			case service.Status(err) >= 500:
				u.d.Log.Error("web: verify", "doc_id", docID, "err", err)
				fallthrough
			default:
				d.VerifyErr = err.Error()
			}
		}
	}
	for _, x := range u.d.Service.Registered() {
		d.UnitNames[x.ID] = x.Name
	}
	for i, f := range doc.Files {
		if strings.HasPrefix(f.MediaType, "application/pdf") {
			d.PDF = &doc.Files[i]
			break
		}
	}
	d.Timeline = append(d.Timeline, event{At: doc.AcceptedAt, Kind: "accepted", Unit: doc.Doc.From})
	for _, rc := range doc.Recipients {
		if !rc.DeliveredAt.IsZero() {
			d.Timeline = append(d.Timeline, event{At: rc.DeliveredAt, Kind: "delivered", Unit: rc.Unit})
		}
	}
	for i := range doc.History {
		h := &doc.History[i]
		d.Timeline = append(d.Timeline, event{At: h.Time, Kind: "status", Unit: h.Unit, Status: h, Flagged: h.Flagged})
	}
	sort.SliceStable(d.Timeline, func(i, j int) bool { return d.Timeline[i].At.Before(d.Timeline[j].At) })
	u.render(w, r, http.StatusOK, "document", "metadata", d)
}

// unitsData is the units page's.
type unitsData struct {
	Units []service.UnitView
}

func (u *ui) units(w http.ResponseWriter, r *http.Request) {
	id := who(r)
	if !id.Can(auth.ReadAll) && id.User.Unit != "" {
		http.Redirect(w, r, "/units/"+url.PathEscape(string(id.User.Unit)), http.StatusSeeOther)
		return
	}
	us, err := u.d.Service.Units(r.Context(), id, false)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "units", "units", unitsData{Units: us})
}

// unitData is a unit page's.
type unitData struct {
	Unit                        service.UnitView
	Sent, Received              []index.Summary
	SentTotal, ReceivedTotal    int
	Pending, Overdue            []index.Summary
	SentLink, ReceivedLink, Now string
}

func (u *ui) unit(w http.ResponseWriter, r *http.Request) {
	id := who(r)
	uid := document.UnitID(chi.URLParam(r, "id"))
	uv, err := u.d.Service.Unit(r.Context(), id, uid)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d := unitData{Unit: uv, SentLink: "/search?from=" + url.QueryEscape(string(uid)), ReceivedLink: "/search?to=" + url.QueryEscape(string(uid))}
	ctx := r.Context()
	sent, err := u.d.Service.Search(ctx, id, index.Query{From: uid, Limit: 10})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	recv, err := u.d.Service.Search(ctx, id, index.Query{To: uid, Limit: 10})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	d.Sent, d.SentTotal, d.Received, d.ReceivedTotal = sent.Items, sent.Total, recv.Items, recv.Total
	if d.Pending, err = u.d.Service.Pending(ctx, id, uid, 20); err != nil {
		u.fail(w, r, err)
		return
	}
	if d.Overdue, err = u.d.Service.Overdue(ctx, id, uid); err != nil {
		u.fail(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "unit", "units", d)
}

// auditData is the audit page's.
type auditData struct {
	Verify   *service.Verification
	At       string
	Names    [2]string // uploaded file names
	Error    string
	Uploaded bool
}

func (u *ui) auditPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, http.StatusOK, "audit", "audit", auditData{At: service.AtNow})
}

func (u *ui) audit(w http.ResponseWriter, r *http.Request) {
	d := auditData{At: service.AtNow, Uploaded: true}
	var err error
	d.Verify, err = u.d.Service.VerifyUpload(who(r), func() ([]byte, []byte, string, error) {
		data, receipt, err := readAudit(w, r)
		if err != nil {
			return nil, nil, "", err
		}
		if r.FormValue("at") == service.AtAccepted {
			d.At = service.AtAccepted
		}
		if _, h, e := r.FormFile("container"); e == nil {
			d.Names[0] = h.Filename
		}
		if _, h, e := r.FormFile("receipt"); e == nil {
			d.Names[1] = h.Filename
		}
		return data, receipt, d.At, nil
	})
	code := http.StatusOK
	if err != nil {
		if service.Status(err) >= 500 || errors.Is(err, service.ErrForbidden) {
			u.fail(w, r, err)
			return
		}
		d.Error, code = err.Error(), http.StatusBadRequest
	}
	u.render(w, r, code, "audit", "audit", d)
}

// readAudit reads the audit form's upload: the part "container" and an
// optional part "receipt".
func readAudit(w http.ResponseWriter, r *http.Request) (data, receipt []byte, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, service.MaxUpload)
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	read := func(name string) ([]byte, error) {
		f, _, err := r.FormFile(name)
		if errors.Is(err, http.ErrMissingFile) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", service.ErrInvalid, name, err)
		}
		defer f.Close()
		return io.ReadAll(f)
	}
	if data, err = read("container"); err != nil {
		return nil, nil, err
	}
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: the form has no part \"container\"", service.ErrInvalid)
	}
	if receipt, err = read("receipt"); err != nil || len(receipt) == 0 {
		return data, nil, err
	}
	return data, receipt, nil
}

// accountData is the account page's.
type accountData struct {
	Tokens    []auth.Token
	NewSecret string
	Flash     string
	Error     string
}

func (u *ui) accountPage(w http.ResponseWriter, r *http.Request, code int, d accountData) {
	id := who(r)
	if id.Via != auth.ViaAdminToken {
		ts, err := u.d.Service.Tokens(r.Context(), id, id.User.Name)
		if err != nil {
			u.fail(w, r, err)
			return
		}
		d.Tokens = ts
	}
	u.render(w, r, code, "account", "account", d)
}

func (u *ui) account(w http.ResponseWriter, r *http.Request) {
	u.accountPage(w, r, http.StatusOK, accountData{})
}

func (u *ui) changePassword(w http.ResponseWriter, r *http.Request) {
	id := who(r)
	cur, pw, pw2 := r.PostFormValue("current"), r.PostFormValue("password"), r.PostFormValue("password2")
	switch {
	case pw != pw2:
		u.accountPage(w, r, http.StatusBadRequest, accountData{Error: T("passwords_differ")})
		return
	case id.Via != auth.ViaSession:
		u.fail(w, r, service.ErrForbidden)
		return
	}
	// The service checks the current password, under the sign-in limits.
	_, err := u.d.Service.UpdateUser(r.Context(), id, id.User.Name, service.UserChange{Change: auth.Change{Password: &pw}, CurrentPassword: cur})
	var re *auth.RetryError
	switch {
	case errors.Is(err, service.ErrCurrentPassword) || (err != nil && cur == ""):
		u.accountPage(w, r, http.StatusBadRequest, accountData{Error: T("wrong_password")})
		return
	case errors.As(err, &re):
		w.Header().Set("Retry-After", strconv.Itoa(int(re.After.Seconds())))
		u.accountPage(w, r, http.StatusTooManyRequests, accountData{Error: T("rate_limited")})
		return
	case err != nil:
		u.accountPage(w, r, service.Status(err), accountData{Error: err.Error()})
		return
	}
	// The change ended every session, this one too: sign in again.
	u.d.Auth.SignOut(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (u *ui) newToken(w http.ResponseWriter, r *http.Request) {
	id := who(r)
	res, err := u.d.Service.NewToken(r.Context(), id, service.TokenRequest{Name: r.PostFormValue("name"), TTL: r.PostFormValue("ttl")})
	if err != nil {
		u.accountPage(w, r, service.Status(err), accountData{Error: err.Error()})
		return
	}
	u.accountPage(w, r, http.StatusOK, accountData{NewSecret: res.Secret})
}

func (u *ui) revokeToken(w http.ResponseWriter, r *http.Request) {
	if err := u.d.Service.RevokeToken(r.Context(), who(r), chi.URLParam(r, "id")); err != nil {
		u.accountPage(w, r, service.Status(err), accountData{Error: err.Error()})
		return
	}
	u.accountPage(w, r, http.StatusOK, accountData{Flash: T("token_revoked")})
}

// usersData is the user administration page's.
type usersData struct {
	Users    []auth.User
	Units    []index.Unit
	Roles    []auth.Role
	Flash    string
	Password string // a generated password, shown once
	Error    string
	Form     url.Values
}

func (u *ui) usersPage(w http.ResponseWriter, r *http.Request, code int, d usersData) {
	var err error
	if d.Users, err = u.d.Service.Users(r.Context(), who(r)); err != nil {
		u.fail(w, r, err)
		return
	}
	d.Units = u.d.Service.Registered()
	d.Roles = auth.Roles
	if d.Form == nil {
		d.Form = url.Values{}
	}
	u.render(w, r, code, "users", "users", d)
}

func (u *ui) users(w http.ResponseWriter, r *http.Request) {
	u.usersPage(w, r, http.StatusOK, usersData{})
}

func (u *ui) addUser(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	nu := auth.NewUser{Name: r.PostFormValue("name"), DisplayName: r.PostFormValue("display_name"),
		Role: auth.Role(r.PostFormValue("role")), Unit: document.UnitID(r.PostFormValue("unit")), Password: r.PostFormValue("password")}
	if nu.Role != auth.RoleStaff {
		nu.Unit = ""
	}
	res, err := u.d.Service.AddUser(r.Context(), who(r), nu)
	if err != nil {
		if errors.Is(err, service.ErrForbidden) {
			u.fail(w, r, err)
			return
		}
		u.usersPage(w, r, service.Status(err), usersData{Error: err.Error(), Form: r.PostForm})
		return
	}
	u.usersPage(w, r, http.StatusOK, usersData{Flash: T("user_created") + ": " + res.User.Name, Password: res.Password})
}

func (u *ui) changeUser(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	var c auth.Change
	var generated string
	switch r.PostFormValue("action") {
	case "disable":
		c.Disabled = new(true)
	case "enable":
		c.Disabled = new(false)
	case "reset":
		generated = rand.Text()
		c.Password = &generated
	case "role":
		role := auth.Role(r.PostFormValue("role"))
		unit := document.UnitID(r.PostFormValue("unit"))
		if role != auth.RoleStaff {
			unit = ""
		}
		c.Role, c.Unit = &role, &unit
	default:
		u.usersPage(w, r, http.StatusBadRequest, usersData{Error: "unknown action"})
		return
	}
	usr, err := u.d.Service.UpdateUser(r.Context(), who(r), name, service.UserChange{Change: c})
	if err != nil {
		if errors.Is(err, service.ErrForbidden) {
			u.fail(w, r, err)
			return
		}
		u.usersPage(w, r, service.Status(err), usersData{Error: err.Error()})
		return
	}
	u.usersPage(w, r, http.StatusOK, usersData{Flash: T("user_changed") + ": " + usr.Name, Password: generated})
}
