package inbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/internal/agenttest"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

func TestCheckNames(t *testing.T) {
	for _, tc := range []struct {
		names []string
		bad   string // the name reported, "" for none
	}{
		{[]string{"van-ban.pdf", "phu-luc/bang-1.xlsx", "Quyết định số 1234.pdf"}, ""},
		{[]string{"a", "a/b.txt"}, "a/b.txt"},
		{[]string{"a/b.txt", "A"}, "a/b.txt"},
		{[]string{"CON"}, "CON"},
		{[]string{"con.txt"}, "con.txt"},
		{[]string{"dir/LPT1.pdf"}, "dir/LPT1.pdf"},
		{[]string{"COM¹"}, "COM¹"},
		{[]string{"x.pdf."}, "x.pdf."},
		{[]string{"x.pdf "}, "x.pdf "},
		{[]string{"q:z.txt"}, "q:z.txt"},
		{[]string{`a\b.txt`}, `a\b.txt`},
		{[]string{"a?.txt"}, "a?.txt"},
		{[]string{"tab\t.txt"}, "tab\t.txt"},
		{[]string{"a//b"}, "a//b"},
		{[]string{"../x"}, "../x"},
		{[]string{strings.Repeat("đ", 128) + ".pdf"}, strings.Repeat("đ", 128) + ".pdf"},
		{[]string{"Van-Ban.pdf", "van-ban.PDF"}, "van-ban.PDF"},
		{[]string{"\xff.pdf"}, "\xff.pdf"},
		{[]string{"CONSOLE.txt", "COM10", "LPT"}, ""}, // not device names
	} {
		rs := CheckNames(tc.names)
		switch {
		case tc.bad == "" && len(rs) > 0:
			t.Errorf("%q: %v", tc.names, rs)
		case tc.bad != "" && (len(rs) != 1 || rs[0].Code != reason.ContainerBadPath || !strings.HasPrefix(rs[0].Message, "files/"+tc.bad+": ")):
			t.Errorf("%q: %v, want files/%s reported", tc.names, rs, tc.bad)
		}
	}
}

// hostile returns a verified delivery with its payload files renamed.
func hostile(t *testing.T, r Received, names ...string) Received {
	t.Helper()
	var entries []*container.Entry
	var file *container.Entry
	for _, e := range r.Container.Entries {
		if !strings.HasPrefix(e.Name, container.FilesDir) {
			entries = append(entries, e)
		} else {
			file = e
		}
	}
	for _, n := range names {
		// The payload file's bytes under each hostile name (Open refuses
		// such names, so the entries are renamed after opening).
		e := *file
		e.Name = container.FilesDir + n
		entries = append(entries, &e)
	}
	c := *r.Container
	c.Entries = entries
	r.Container = &c
	return r
}

// TestPutUnwritable: a delivery whose file names no folder can hold on
// every system is an *UnwritableError (not a failure worth retrying), and
// nothing of it is written or remembered; its refusal is queued once.
// Before, Put failed on files/a beside files/a/b.txt with an error the agent
// retried forever, and wrote CON, x.pdf. and q:z.txt, which a Windows
// document system cannot open.
func TestPutUnwritable(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	for _, names := range [][]string{{"a", "a/b.txt"}, {"CON"}, {"x.pdf."}, {"q:z.txt"}} {
		r := hostile(t, received(t, p), names...)
		id := r.Container.Meta.ID
		_, _, err := s.Put(ctx, me, r)
		var ue *UnwritableError
		if !errors.As(err, &ue) || ue.ID != id || !ue.Reasons.Has(reason.ContainerBadPath) {
			t.Fatalf("%q: %v, want an UnwritableError", names, err)
		}
		if _, err := os.Stat(s.Dir(id)); !os.IsNotExist(err) {
			t.Fatalf("%q: the folder was written", names)
		}
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%q: remembered as received", names)
		}
		for i := range 2 {
			queued, err := s.Refuse(ctx, me, id, "", ue.Reasons)
			if err != nil || queued != (i == 0) {
				t.Fatalf("%q: refusal %d: queued %v, %v", names, i+1, queued, err)
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "inbox"))
	if len(ents) != 0 {
		t.Fatalf("inbox folder holds %d entries", len(ents))
	}
	pend, err := s.PendingStatuses(ctx, 10)
	if err != nil || len(pend) != 4 {
		t.Fatalf("pending %d statuses, want 4 refusals (%v)", len(pend), err)
	}
	for _, st := range pend {
		if st.Code != document.StatusRefused || st.Unit != me || !strings.Contains(st.Description, "container.bad_path") || st.Validate() != nil {
			t.Errorf("refusal %+v", st)
		}
	}
	// A document received fine is not refused by a later copy.
	r := received(t, p)
	if _, _, err := s.Put(ctx, me, r); err != nil {
		t.Fatal(err)
	}
	if queued, err := s.Refuse(ctx, me, r.Container.Meta.ID, r.SHA256, reason.List{{Code: reason.ReceiptInvalid, Message: "x"}}); err != nil || queued {
		t.Fatalf("refusal of a received document: %v %v", queued, err)
	}
}

// TestRefusalDescription: the reasons fit the 4000 bytes of a status
// description, cut on a character boundary.
func TestRefusalDescription(t *testing.T) {
	var rs reason.List
	for range 100 {
		rs.Add(reason.ContainerBadPath, "files/"+strings.Repeat("đ", 40)+": a device name on Windows")
	}
	d := refusal(rs)
	st := document.Status{DocumentID: document.NewID(time.Now()), Unit: me, Time: time.Now(), Code: document.StatusRefused, Description: d}
	if len(d) > 4000 || st.Validate() != nil || !strings.HasSuffix(d, "…") {
		t.Fatalf("description of %d bytes: %v", len(d), st.Validate())
	}
}
