package web

import (
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/index"
)

// TestSearchPageSignalsCaps: past the caps, the search page says that the
// count stops (10000+) and that a relevance order ranked only the newest
// matches, with how many.
func TestSearchPageSignalsCaps(t *testing.T) {
	pages := parsePages(time.UTC)
	for _, tc := range []struct {
		page index.Page
		want []string
		not  []string
	}{
		{index.Page{Total: 10000, TotalCapped: true, Ranked: 1000}, []string{"<strong>10000+</strong>", `id="capped-note"`, `id="ranked-note"`, "<strong>1000</strong>", "newest matches"}, nil},
		{index.Page{Total: 3214, TotalCapped: true}, []string{"<strong>3214+</strong>", `id="capped-note"`}, []string{`id="ranked-note"`}},
		{index.Page{Total: 12}, []string{"<strong>12</strong>"}, []string{`id="ranked-note"`, `id="capped-note"`, "12+"}},
	} {
		var b strings.Builder
		if err := pages["search"].ExecuteTemplate(&b, "base.html", page{Title: "search", Data: searchData{Page: &tc.page}}); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%+v: no %q in the page", tc.page, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(b.String(), w) {
				t.Errorf("%+v: %q in the page", tc.page, w)
			}
		}
	}
}
