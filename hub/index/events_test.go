package index

import (
	"errors"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// TestPutStatuses: statuses recorded as another index recorded them keep
// the flag and reception time they carry, in any order, and again change
// nothing; one without a reception time is flagged here as AddStatus does.
func TestPutStatuses(t *testing.T) {
	ctx := t.Context()
	rec := testRecord(t0, hcm, dept1)
	id := rec.Doc.ID
	e := func(c document.StatusCode, min int, flagged bool) StatusEntry {
		at := t0.Add(time.Duration(min) * time.Minute)
		return StatusEntry{Status: document.Status{DocumentID: id, Unit: dept1, Code: c, Time: at}, Flagged: flagged, ReceivedAt: at.Add(time.Second)}
	}
	// As the deciding hub flagged them (03 came before its 01).
	es := []StatusEntry{e(document.StatusAccepted, 1, true), e(document.StatusDelivered, 2, false)}
	history := func(ix *Index) []StatusEntry {
		t.Helper()
		det, err := ix.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return det.History
	}
	a, _ := openTest(t)
	b, _ := openTest(t)
	for _, ix := range []*Index{a, b} {
		if err := ix.PutDocument(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.PutStatuses(ctx, es); err != nil {
		t.Fatal(err)
	}
	for _, x := range []StatusEntry{es[1], es[0], es[1]} { // another order, and again
		if err := b.PutStatuses(ctx, []StatusEntry{x}); err != nil {
			t.Fatal(err)
		}
	}
	ha, hb := history(a), history(b)
	if len(ha) != 2 || len(hb) != 2 {
		t.Fatalf("histories %+v %+v", ha, hb)
	}
	for i := range ha {
		if ha[i].Code != hb[i].Code || ha[i].Flagged != hb[i].Flagged || !ha[i].ReceivedAt.Equal(hb[i].ReceivedAt) ||
			ha[i].Flagged != (ha[i].Code == document.StatusAccepted) || !ha[i].ReceivedAt.Equal(ha[i].Time.Add(time.Second)) {
			t.Errorf("entry %d: %+v and %+v", i, ha[i], hb[i])
		}
	}
	// Without a reception time: flagged here (03 after 01 is in order).
	legacy := e(document.StatusAccepted, 3, true)
	legacy.ReceivedAt = time.Time{}
	if err := a.PutStatuses(ctx, []StatusEntry{legacy}); err != nil {
		t.Fatal(err)
	}
	if h := history(a); len(h) != 3 || h[2].Flagged {
		t.Errorf("a status without a reception time: %+v", h)
	}
	other := testRecord(t0, hcm, dept2)
	if err := a.PutStatuses(ctx, []StatusEntry{{Status: document.Status{DocumentID: other.Doc.ID, Unit: dept2, Code: "01", Time: t0}, ReceivedAt: t0}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a status of a document the index lacks: %v", err)
	}
}

// TestEventsState: where the index stands in the decision events survives a
// reopen and a Reset (a rebuild sets it itself).
func TestEventsState(t *testing.T) {
	ctx := t.Context()
	ix, path := openTest(t)
	if st, err := ix.EventsState(ctx); err != nil || st != (EventsState{}) {
		t.Fatalf("a new index: %+v %v", st, err)
	}
	want := EventsState{Consumer: "edx-index-X", Seq: 42, Complete: true}
	if err := ix.SetEventsState(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := ix.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	ix2, err := Open(ctx, Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ix2.Close()
	if st, err := ix2.EventsState(ctx); err != nil || st != want {
		t.Fatalf("reopened: %+v %v", st, err)
	}
}
