package web_test

import (
	"strings"
	"testing"

	"github.com/edxhub/edx/hub/api/apitest"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/pkg/document"
)

// TestUpstreamShown: a document the city's gateway brought in from the
// national axis shows who sent it there and the axis's own id.
func TestUpstreamShown(t *testing.T) {
	s := newSite(t)
	id := s.Accept(apitest.DocSpec{Name: "cv-bnv", Subject: "Công văn hướng dẫn của Bộ Nội vụ", Type: "CV", Number: "77", Signer: "Trần Văn Bình",
		From: apitest.UnitA, To: []document.UnitID{apitest.UnitB}, Accepted: apitest.Day(3, 2),
		Upstream: &document.Upstream{From: "000.00.00.G22", FromName: "Bộ Nội vụ", Axis: "vdxp", DocID: "vdxp-000042.1"}})
	s.User("luu-tru", auth.RoleArchivist, "")
	b := s.browser(t)
	b.signIn("luu-tru")
	code, body := b.get("/documents/" + string(id))
	for _, want := range []string{`id="upstream"`, "Gửi từ ngoài thành phố", "Bộ Nội vụ", "000.00.00.G22", "vdxp", "vdxp-000042.1"} {
		if !strings.Contains(body, want) {
			t.Errorf("the document page lacks %q", want)
		}
	}
	if code != 200 || t.Failed() {
		t.Fatalf("%d\n%s", code, body)
	}
}
