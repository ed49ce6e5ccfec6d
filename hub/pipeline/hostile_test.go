package pipeline

import (
	"strings"
	"testing"

	"github.com/edxhub/edx/pkg/container/containertest"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// TestHostileContainersRejected: containers a unit builds itself and signs
// validly, with payload names no recipient can write (issue #9) or as a flat
// zip bomb, are rejected: the sender gets a rejection notice with the
// reason's code, nothing is routed, and the hub goes on.
func TestHostileContainersRejected(t *testing.T) {
	e := newEnv(t, uA, uB)
	e.run(e.deps)
	a := e.units[uA]
	x := func(name string) containertest.Entry { return containertest.Entry{Name: name, Data: []byte("x")} }
	cases := []struct {
		name    string
		entries []containertest.Entry
		want    reason.Code
	}{
		{"a file beside a folder of its name", []containertest.Entry{x("files/a"), x("files/a/b.txt")}, reason.ContainerBadPath},
		{"CON", []containertest.Entry{x("files/CON")}, reason.ContainerBadPath},
		{"con.txt", []containertest.Entry{x("files/con.txt")}, reason.ContainerBadPath},
		{"trailing dot", []containertest.Entry{x("files/x.pdf.")}, reason.ContainerBadPath},
		{"trailing space", []containertest.Entry{x("files/x.pdf ")}, reason.ContainerBadPath},
		{"colon", []containertest.Entry{x("files/q:z.txt")}, reason.ContainerBadPath},
		{"control character", []containertest.Entry{x("files/a\x01.txt")}, reason.ContainerBadPath},
		{"over-long", []containertest.Entry{x("files/" + longName)}, reason.ContainerBadPath},
		{"outside files/", []containertest.Entry{x("files/a.pdf"), x("b.pdf")}, reason.ContainerBadPath},
		{"flat zip bomb", nil, reason.ContainerZipBomb},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, meta := doc(uA, uB)
			var data []byte
			var err error
			if tc.entries == nil {
				data, err = containertest.FlatBomb(meta, a.signer, 990, 1<<20)
			} else {
				data, err = containertest.Craft(meta, a.signer, tc.entries...)
			}
			if err != nil {
				t.Fatal(err)
			}
			a.submit(t, id, data)
			n := a.notice(t)
			if n.Type != protocol.NoticeRejected || n.DocumentID != id || !n.Reasons.Has(tc.want) {
				t.Fatalf("notice %s for %s %v, want rejected with %s", n.Type, n.DocumentID, n.Reasons, tc.want)
			}
		})
	}
	if got := e.deliveries(uB); got != 0 {
		t.Errorf("%d deliveries routed to B", got)
	}
	id, meta := doc(uA, uB)
	a.submit(t, id, a.build(t, meta, 1000))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("after the rejections: %+v", n)
	}
}

var longName = strings.Repeat("a", 256)
