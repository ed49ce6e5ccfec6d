package web_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/service/servicetest"
)

// TestVerifyBusyPages: the web UI shares the API's verification slots.
// With every slot taken, the document page shows its metadata and says the
// signature was not checked now (not that it is invalid), and an /audit
// upload answers 503 with Retry-After; once a slot frees, both verify.
func TestVerifyBusyPages(t *testing.T) {
	f := servicetest.New(t)
	f.Reconfigure(func(d *service.Deps) { d.MaxVerifications = 1 })
	s := siteOf(t, f)
	s.User("kiem-toan", auth.RoleAuditor, "")
	s.User("luu-tru", auth.RoleArchivist, "")
	aud := s.browser(t)
	aud.signIn("kiem-toan")
	id := string(s.Docs["qd-bc"])
	arch := s.browser(t)
	arch.signIn("luu-tru")
	resp, err := arch.c.Get(s.srv.URL + "/api/v1/documents/" + id + "/container")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("container: %v", err)
	}
	var data bytes.Buffer
	data.ReadFrom(resp.Body)
	resp.Body.Close()
	upload := func() (*http.Response, string) {
		aud.get("/audit")
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("csrf", aud.csrf)
		w, _ := mw.CreateFormFile("container", id+".asice")
		w.Write(data.Bytes())
		mw.Close()
		req, _ := http.NewRequest("POST", s.srv.URL+"/audit", &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := aud.c.Do(req)
		_, body := aud.page(resp, err)
		return resp, body
	}

	holding, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s.Service.VerifyUpload(&auth.Identity{User: auth.User{Name: "kiem-toan", Role: auth.RoleAuditor}}, func() ([]byte, []byte, string, error) {
			close(holding)
			<-release
			return nil, nil, "", service.ErrInvalid
		})
	}()
	<-holding
	code, body := aud.get("/documents/" + id)
	if code != 200 || !strings.Contains(body, `id="verify-busy"`) || strings.Contains(body, `class="verdict invalid"`) || !strings.Contains(body, "Ban chỉ đạo") {
		t.Fatalf("document page while busy: %d\n%s", code, body)
	}
	if resp, body := upload(); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "try again shortly") {
		t.Fatalf("audit upload while busy: %d, Retry-After %q\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	close(release)
	<-done
	if code, body := aud.get("/documents/" + id); code != 200 || !strings.Contains(body, `class="verdict valid"`) {
		t.Fatalf("document page after: %d\n%s", code, body)
	}
	if resp, body := upload(); resp.StatusCode != 200 || !strings.Contains(body, `class="verdict valid"`) {
		t.Fatalf("audit upload after: %d\n%s", resp.StatusCode, body)
	}
}
