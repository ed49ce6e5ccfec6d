// Package web is the hub's user interface for records staff, archivists,
// auditors and admins: server-rendered pages (html/template) with their
// stylesheet embedded (go:embed), no JavaScript and nothing from another
// origin, labels in Vietnamese and English.
//
// Pages: sign-in; search with filters and results; a document with its
// metadata, files (PDF shown inline), a signature panel (re-verified on
// every view) and its status timeline; a unit's sent, received, pending and
// overdue documents; the auditor's upload-and-verify page; the account page
// (password, API tokens); user administration.
//
// It is a thin face on the hub's application service (hub/service), as the
// REST API is: every read and change goes through it, so the access rules
// are the API's.
// Forms carry CSRF tokens bound to the session (the sign-in form to a
// cookie of its own), on top of the browser's cross-origin checks.
package web

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	_ "time/tzdata" // the default zone loads on a machine without a zone database
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures the UI (the hub's web: section).
type Config struct {
	// TimeZone is the IANA time zone times are shown in (default
	// Asia/Ho_Chi_Minh), always with their offset: 2026-11-30 14:05:09
	// +07:00. The API's JSON keeps RFC 3339 in UTC.
	TimeZone string `yaml:"time_zone"`
}

// DefaultTimeZone is where the hub's people are.
const DefaultTimeZone = "Asia/Ho_Chi_Minh"

// SetDefaults fills what is not set.
func (c *Config) SetDefaults() {
	if c.TimeZone == "" {
		c.TimeZone = DefaultTimeZone
	}
}

// Validate checks a defaulted configuration.
func (c Config) Validate() error {
	_, err := c.Location()
	return err
}

// Location is the time zone of TimeZone ("" is the default).
func (c Config) Location() (*time.Location, error) {
	name := c.TimeZone
	if name == "" {
		name = DefaultTimeZone
	}
	// Go's embedded zone database (time/tzdata, imported below) answers
	// where the system has none.
	loc, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return nil, fmt.Errorf("web: time_zone %q: want an IANA time zone such as %s", c.TimeZone, DefaultTimeZone)
	}
	return loc, nil
}

// Deps are the UI's collaborators.
type Deps struct {
	// Service is what the UI is a face of: every page reads through it,
	// with the signed-in person's identity.
	Service *service.Service
	// Auth signs people in and out and checks the forms' CSRF tokens.
	Auth *auth.Store
	Log  *slog.Logger
	// Zone is where times are shown (Config.Location); nil is
	// DefaultTimeZone.
	Zone *time.Location
}

type ui struct {
	d     Deps
	pages map[string]*template.Template
}

// csp allows the hub's own stylesheet, frames (PDFs) and forms, nothing else.
const csp = "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; object-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Handler returns the UI. Requests reach it already identified (the API's
// router runs auth.Store.Middleware first).
func Handler(d Deps) http.Handler {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Zone == nil {
		d.Zone, _ = Config{}.Location()
	}
	u := &ui{d: d, pages: parsePages(d.Zone)}
	r := chi.NewRouter()
	r.Use(headers)
	static, _ := fs.Sub(staticFS, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	r.Group(func(r chi.Router) {
		// Browsers' Fetch metadata and Origin checks, then our own tokens.
		r.Use(http.NewCrossOriginProtection().Handler)
		r.Get("/login", u.loginPage)
		r.Post("/login", u.login)
		r.Post("/logout", u.logout)
		r.Group(func(r chi.Router) {
			r.Use(u.signedIn)
			r.Get("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/search", http.StatusSeeOther) })
			r.Get("/search", u.search)
			r.Get("/documents/{id}", u.document)
			r.Get("/units", u.units)
			r.Get("/units/{id}", u.unit)
			r.Get("/audit", u.auditPage)
			r.Post("/audit", u.audit)
			r.Get("/account", u.account)
			r.Post("/account/password", u.changePassword)
			r.Post("/account/tokens", u.newToken)
			r.Post("/account/tokens/{id}/revoke", u.revokeToken)
			r.Get("/admin/users", u.users)
			r.Post("/admin/users", u.addUser)
			r.Post("/admin/users/{name}", u.changeUser)
		})
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		u.fail(w, r, fmt.Errorf("%w: %s", service.ErrNotFound, r.URL.Path))
	})
	return r
}

func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		next.ServeHTTP(w, r)
	})
}

// signedIn sends anonymous visitors to the sign-in page, and refuses form
// posts without the session's CSRF token.
func (u *ui) signedIn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if auth.FromContext(r.Context()) == nil {
			next := r.URL.RequestURI()
			http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && u.d.Auth != nil && !u.d.Auth.CheckCSRF(r) {
			u.render(w, r, http.StatusForbidden, "error", "error", errorData{Status: 403, Message: T("form_expired")})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title string // label key
	Who   *auth.Identity
	CSRF  string
	Flash string
	Error string
	Data  any
}

func parsePages(zone *time.Location) map[string]*template.Template {
	funcs := template.FuncMap{
		"L": L, "T": T,
		"time": func(t time.Time) string { return FormatTime(t, zone) }, "date": fmtDate, "bytes": fmtBytes,
		"status": statusLabel, "urgency": urgencyLabel, "business": businessLabel, "role": roleLabel,
		"docType": docTypeLabel, "has": func(s []string, v string) bool {
			for _, x := range s {
				if x == v {
					return true
				}
			}
			return false
		},
		"pathEscape": url.PathEscape,
		"isPDF":      func(mt string) bool { return strings.HasPrefix(mt, "application/pdf") },
	}
	base := template.Must(template.New("base.html").Funcs(funcs).ParseFS(templateFS, "templates/base.html", "templates/parts.html"))
	pages := map[string]*template.Template{}
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "base" || name == "parts" {
			continue
		}
		pages[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, n))
	}
	return pages
}

func (u *ui) render(w http.ResponseWriter, r *http.Request, code int, name, title string, data any) {
	p := page{Title: title, Who: auth.FromContext(r.Context()), Data: data}
	if u.d.Auth != nil {
		p.CSRF = u.d.Auth.CSRFToken(r)
	}
	var b strings.Builder
	if err := u.pages[name].ExecuteTemplate(&b, "base.html", p); err != nil {
		u.d.Log.Error("web: template", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "private, no-store")
	w.WriteHeader(code)
	w.Write([]byte(b.String()))
}

type errorData struct {
	Status  int
	Message string
}

// fail shows an error page: the message for errors of the caller, a
// generic one (and a log line) for the hub's own.
func (u *ui) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := service.Status(err)
	msg := err.Error()
	switch {
	case code == http.StatusNotFound:
		msg = T("not_found")
	case code == http.StatusForbidden:
		msg = T("forbidden") + ": " + err.Error()
	case errors.Is(err, service.ErrBusy):
		w.Header().Set("Retry-After", "2")
		msg = T("busy")
	case code >= 500:
		u.d.Log.Error("web", "path", r.URL.Path, "err", err)
		msg = http.StatusText(code)
	}
	u.render(w, r, code, "error", "error", errorData{Status: code, Message: msg})
}

// loginData is the sign-in page's.
type loginData struct {
	Next  string
	Name  string
	CSRF  string
	Error string
}

// safeNext keeps a post-sign-in redirect on this site: a path that starts
// with one "/", then not "/" or "\\", with no control character, space or
// backslash anywhere, also once percent-decoded (browsers drop tabs and
// newlines and read "\\" as "/", so "/\t/example.com" and "/\\example.com"
// lead elsewhere), and no scheme or host as net/url reads it. Anything else
// is /search.
func safeNext(s string) string {
	const home = "/search"
	if len(s) > 2048 || !sameSitePath(s) {
		return home
	}
	if d, err := url.PathUnescape(s); err != nil || !sameSitePath(d) {
		return home
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return home
	}
	if u.Path == "/login" || strings.HasPrefix(u.Path, "/login/") {
		return home
	}
	return s
}

func sameSitePath(s string) bool {
	if len(s) < 1 || s[0] != '/' || (len(s) > 1 && (s[1] == '/' || s[1] == '\\')) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\\' || unicode.IsSpace(r) || r == utf8.RuneError ||
			(r >= 0x80 && r <= 0x9f) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

func (u *ui) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if auth.FromContext(r.Context()) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	u.render(w, r, http.StatusOK, "login", "sign_in", loginData{Next: next, CSRF: u.d.Auth.SignInCSRF(w, r)})
}

func (u *ui) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	next := safeNext(r.PostFormValue("next"))
	d := loginData{Next: next, Name: r.PostFormValue("name")}
	code := http.StatusOK
	if !u.d.Auth.CheckSignInCSRF(r) {
		d.Error, code = T("form_expired"), http.StatusForbidden
	} else {
		_, err := u.d.Auth.SignIn(w, r, r.PostFormValue("name"), r.PostFormValue("password"))
		var re *auth.RetryError
		switch {
		case err == nil:
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		case errors.As(err, &re):
			w.Header().Set("Retry-After", fmt.Sprint(int(re.After.Seconds())))
			d.Error, code = T("rate_limited"), http.StatusTooManyRequests
		case errors.Is(err, auth.ErrCredentials):
			d.Error, code = T("bad_sign_in"), http.StatusUnauthorized
		default:
			u.fail(w, r, err)
			return
		}
	}
	d.CSRF = u.d.Auth.SignInCSRF(w, r)
	u.render(w, r, code, "login", "sign_in", d)
}

func (u *ui) logout(w http.ResponseWriter, r *http.Request) {
	if id := auth.FromContext(r.Context()); id != nil && !u.d.Auth.CheckCSRF(r) {
		u.render(w, r, http.StatusForbidden, "error", "error", errorData{Status: 403, Message: T("form_expired")})
		return
	}
	u.d.Auth.SignOut(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// TimeLayout is how a person reads a time on the hub: in the configured
// zone, with its offset, seconds included. cmd/edx writes times the same
// way (it keeps a copy of the layout: the CLI does not import the UI).
const TimeLayout = "2006-01-02 15:04:05 -07:00"

// FormatTime writes t in zone with TimeLayout; "" for the zero time. Every
// time on every page goes through it.
func FormatTime(t time.Time, zone *time.Location) string {
	if t.IsZero() {
		return ""
	}
	return t.In(zone).Format(TimeLayout)
}

// fmtDate writes a calendar date of a document (ngày ban hành, hạn xử lý:
// no time, no zone) as the search form takes them, YYYY-MM-DD.
func fmtDate(s string) string {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return s
	}
	return t.Format(time.DateOnly)
}

func fmtBytes(n any) string {
	var v float64
	switch x := n.(type) {
	case int:
		v = float64(x)
	case int64:
		v = float64(x)
	}
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}
