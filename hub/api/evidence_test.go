package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/audit"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
)

// fakeEvidence answers every proof with the acceptance of one document
// (a unit test of the API's access rules: the hub's real log is tested in
// hub and hub/tlog).
type fakeEvidence struct {
	entry   []byte
	stamped bool
}

func (f *fakeEvidence) Proof(_ context.Context, origin string, index uint64) (*evidence.Proof, error) {
	p := &evidence.Proof{Index: index, Entry: f.entry, Checkpoint: []byte(origin + "\n8\nAAAA\n\n— sig\n")}
	if f.stamped {
		p.Timestamp = []byte("token")
	}
	return p, nil
}

func (f *fakeEvidence) Cosigned(_ context.Context, origin string, _ uint64) ([]byte, error) {
	return []byte(origin + "\n8\nAAAA\n\n— sig\n— witness\n"), nil
}

func (f *fakeEvidence) Info() any { return map[string]string{"origin": "edx.test/hub/1"} }

// TestProofAndBundleAccess: the proof is for those who may verify the
// document (its units' staff, auditors, archivists, admins); the bundle,
// which holds the container, for those who may also read its content; a
// document one may not see is not found; a document whose receipt names no
// log entry has no proof; no bundle before the entry is time-stamped.
func TestProofAndBundleAccess(t *testing.T) {
	fe := &fakeEvidence{}
	f := newFixture(t, func(d *service.Deps) { d.Evidence = fe })
	id := f.accept(docSpec{Subject: "Quyết định có nhật ký", Type: "QĐ", Number: "501", Signer: "Nguyễn Văn An", From: unitA, To: []document.UnitID{unitB}, Accepted: day(5, 1),
		Log: &container.LogRef{Origin: "edx.test/hub/1", Index: 7}})
	old := f.accept(docSpec{Subject: "Quyết định trước nhật ký", Type: "QĐ", Number: "502", Signer: "Nguyễn Văn An", From: unitA, To: []document.UnitID{unitB}, Accepted: day(5, 2)})
	d, err := f.ix.Get(t.Context(), id)
	must(t, err)
	e := &evidence.Entry{V: 1, Kind: evidence.Accepted, Time: d.AcceptedAt.UTC(), Doc: string(id), Container: d.ContainerSHA256,
		Sender: string(unitA), Recipients: []string{string(unitB)}}
	eb, err := e.Marshal()
	must(t, err)
	fe.entry = eb
	auditor := f.user("kiem-toan-2", auth.RoleAuditor, "")
	staffB := f.user("van-thu-b", auth.RoleStaff, unitB)
	staffC := f.user("van-thu-c", auth.RoleStaff, unitC)
	for _, tc := range []struct {
		who          string
		token        string
		doc          document.ID
		proof, bundl int
	}{
		{"admin", f.admin, id, 200, 503},
		{"auditor", auditor, id, 200, 403},
		{"staff of the recipient", staffB, id, 200, 503},
		{"staff of another unit", staffC, id, 404, 404},
		{"no log entry", f.admin, old, 404, 404},
	} {
		resp, body := f.do(tc.token, "GET", "/api/v1/documents/"+string(tc.doc)+"/proof", "", nil)
		if resp.StatusCode != tc.proof {
			t.Errorf("%s: proof %d, want %d: %s", tc.who, resp.StatusCode, tc.proof, body)
		}
		resp, body = f.do(tc.token, "GET", "/api/v1/documents/"+string(tc.doc)+"/bundle", "", nil)
		if resp.StatusCode != tc.bundl {
			t.Errorf("%s: bundle %d, want %d: %s", tc.who, resp.StatusCode, tc.bundl, body)
		}
	}
	fe.stamped = true
	resp, body := f.do(staffB, "GET", "/api/v1/documents/"+string(id)+"/bundle", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.MediaBundle {
		t.Fatalf("bundle: %d %s", resp.StatusCode, body)
	}
	b, err := audit.Parse(body)
	if err != nil || b.Document != id || b.Origin != "edx.test/hub/1" || b.Proof.Index != 7 || len(b.Cosigned) == 0 {
		t.Fatalf("bundle: %v %+v", err, b)
	}
	if resp, body := f.do(auditor, "GET", "/api/v1/documents/"+string(id)+"/bundle", "", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an auditor (no content) got the bundle: %d %s", resp.StatusCode, body)
	}
}
