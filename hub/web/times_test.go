package web_test

import (
	"html"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service/servicetest"
	"github.com/edxhub/edx/hub/web"
)

// TestTimesShown: every time on a page is in the display zone with its
// offset (2026-01-15 10:00:00 +07:00), dates are YYYY-MM-DD, and the zone
// is the configuration's.
func TestTimesShown(t *testing.T) {
	f := servicetest.New(t)
	f.User("luu-tru", auth.RoleArchivist, "")
	qd := string(f.Docs["qd-dat-dai"])
	anyTime := regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?( [+-]\d\d:\d\d)?|\d\d/\d\d/\d{4}( \d\d:\d\d(:\d\d)?)?|\d{4}-\d\d-\d\dT\d\d:\d\d`)
	for _, tc := range []struct {
		zone     string
		accepted string // qd-dat-dai's acceptance, 2026-01-15 10:00 in Vietnam
		offset   string
	}{
		{"", "2026-01-15 10:00:00 +07:00", "+07:00"},
		{"Asia/Ho_Chi_Minh", "2026-01-15 10:00:00 +07:00", "+07:00"},
		{"UTC", "2026-01-15 03:00:00 +00:00", "+00:00"},
	} {
		t.Run(tc.zone, func(t *testing.T) {
			cfg := web.Config{TimeZone: tc.zone}
			cfg.SetDefaults()
			zone, err := cfg.Location()
			if err != nil {
				t.Fatal(err)
			}
			h := api.Handler(api.Deps{Service: f.Service, Auth: f.Auth, AdminToken: f.AdminToken, Log: f.Log,
				Web: web.Handler(web.Deps{Service: f.Service, Auth: f.Auth, Log: f.Log, Zone: zone})})
			s := &site{Fixture: f, srv: httptest.NewServer(h)}
			defer s.srv.Close()
			b := s.browser(t)
			b.signIn("luu-tru")
			for _, path := range []string{"/documents/" + qd, "/search?q=dat+dai", "/units", "/account"} {
				code, body := b.get(path)
				if code != 200 {
					t.Fatalf("%s: %d", path, code)
				}
				body = html.UnescapeString(body) // html/template writes + as &#43;
				// Every time-like string is a full time with this offset,
				// or a date.
				for _, m := range anyTime.FindAllString(body, -1) {
					if !strings.HasSuffix(m, " "+tc.offset) || len(m) != len("2006-01-02 15:04:05 -07:00") {
						t.Errorf("%s shows %q", path, m)
					}
				}
				if path != "/account" && !strings.Contains(body, tc.accepted) && path != "/units" {
					t.Errorf("%s lacks %q", path, tc.accepted)
				}
			}
			if _, body := b.get("/documents/" + qd); !strings.Contains(body, "2026-01-30") || strings.Contains(body, "30/01/2026") {
				t.Error("the due date is not YYYY-MM-DD")
			}
		})
	}
	for _, bad := range []string{"Mars/Olympus_Mons", "Local", "+07:00"} {
		if err := (web.Config{TimeZone: bad}).Validate(); err == nil {
			t.Errorf("time_zone %q validates", bad)
		}
	}
}
