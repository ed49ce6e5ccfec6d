package tlog

import (
	"bytes"
	"context"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/pkg/evidence"
)

// TestProofBoundsTheTime: an entry's proof carries the time-stamped
// checkpoint before the one that holds it, so that the TSA bounds the
// entry's time on both sides; the log's own proof and the one built from
// its mirror in the archive (no hub running) are the same and verify; a
// proof whose "previous" checkpoint already holds the entry, or that is
// not consistent with the newer one, is refused.
func TestProofBoundsTheTime(t *testing.T) {
	ts := newTestTSA(t)
	a := testArchive(t)
	l := openLog(t, t.TempDir(), newKey(t), ts)
	ctx := t.Context()
	appendN(t, l.Log, 0, 10, "b")
	await(t, l.Log, 9)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	appendN(t, l.Log, 10, 300, "b")
	await(t, l.Log, 309)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range l.Stamped() {
		if err := l.Mirror(ctx, a, "tlog/x/", s); err != nil {
			t.Fatal(err)
		}
	}
	lv, _ := note.NewVerifier(l.vkey)
	opts := evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true}
	m := OpenMirror(a, "tlog/x/")
	for _, i := range []uint64{0, 9, 10, 200, 309} {
		p, err := l.Proof(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		v, err := p.Verify(opts)
		if err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
		switch {
		case i < 10 && (p.Previous != nil || !v.After.IsZero()):
			t.Errorf("entry %d is in the first time-stamped checkpoint: no previous one, got %v", i, v.Previous)
		case i >= 10 && (v.Previous == nil || v.Previous.Size != 10 || v.After.IsZero() || v.After.After(v.Time)):
			t.Errorf("entry %d: previous %v, after %s, before %s", i, v.Previous, v.After, v.Time)
		}
		mp, err := m.Proof(ctx, i)
		if err != nil {
			t.Fatalf("proof %d from the archive: %v", i, err)
		}
		if _, err := mp.Verify(opts); err != nil {
			t.Fatalf("proof %d from the archive: %v", i, err)
		}
		if !bytes.Equal(mp.Checkpoint, p.Checkpoint) || !bytes.Equal(mp.Entry, p.Entry) || (mp.Previous == nil) != (p.Previous == nil) {
			t.Errorf("proof %d from the archive differs from the log's", i)
		}
	}
	// Not integrated in a mirrored checkpoint yet.
	appendN(t, l.Log, 310, 1, "b")
	if _, err := m.Proof(ctx, 310); err == nil {
		t.Error("the mirror proved an entry it does not hold")
	}

	// Forged anchors.
	p, _ := l.Proof(ctx, 200)
	later := *p
	later.Previous = &evidence.Anchor{Checkpoint: p.Checkpoint, Timestamp: p.Timestamp, Consistency: nil}
	if _, err := later.Verify(opts); err == nil {
		t.Error("a previous checkpoint that holds the entry was accepted")
	}
	p0, _ := l.Proof(ctx, 0)
	bad := *p
	bad.Previous = &evidence.Anchor{Checkpoint: p.Previous.Checkpoint, Timestamp: p.Previous.Timestamp, Consistency: p0.Hashes}
	if _, err := bad.Verify(opts); err == nil {
		t.Error("a previous checkpoint without its consistency proof was accepted")
	}
	swapped := *p
	swapped.Previous = &evidence.Anchor{Checkpoint: p.Previous.Checkpoint, Timestamp: p.Timestamp, Consistency: p.Previous.Consistency}
	if _, err := swapped.Verify(opts); err == nil {
		t.Error("a previous checkpoint with another's token was accepted")
	}

	// The whole log, read from the archive, hashes to the checkpoint.
	raw, _ := m.Checkpoint(ctx, 310)
	cp, err := evidence.OpenCheckpoint(raw, l.Origin(), lv)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := evidence.ReadAll(ctx, m.ReadEntryBundle, cp, func(uint64, []byte) error { n++; return nil }); err != nil || n != 310 {
		t.Fatalf("read all: %d entries, %v", n, err)
	}
	// One entry bundle changed in the archive: the read fails.
	bundle, _, err := a.Get(ctx, "tlog/x/tile/entries/000")
	if err != nil {
		t.Fatal(err)
	}
	ta := &tamperedArchive{Store: a, key: "tlog/x/tile/entries/000", data: append(bytes.Clone(bundle[:len(bundle)-2]), bundle[len(bundle)-2]^1, bundle[len(bundle)-1])}
	if err := evidence.ReadAll(ctx, OpenMirror(ta, "tlog/x/").ReadEntryBundle, cp, func(uint64, []byte) error { return nil }); err == nil {
		t.Error("a changed entry bundle read as the signed log")
	}
}

type tamperedArchive struct {
	*archive.Store
	key  string
	data []byte
}

func (t *tamperedArchive) Get(ctx context.Context, key string) ([]byte, archive.Object, error) {
	if key == t.key {
		return t.data, archive.Object{Key: key}, nil
	}
	return t.Store.Get(ctx, key)
}

// TestAppendOnce: a decision met again (after a restart too) is logged
// once, and its first index is returned.
func TestAppendOnce(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	l := openLog(t, dir, key, nil)
	ctx := t.Context()
	crl := &evidence.Entry{V: 1, Kind: evidence.CRL, Time: baseTime, Action: "installed", Digest: entry(1, "k").Container}
	i1, dup, err := l.AppendOnce(ctx, crl)
	if err != nil || dup {
		t.Fatalf("first: %d %v %v", i1, dup, err)
	}
	later := *crl
	later.Time = baseTime.Add(3600e9)
	if i, dup, err := l.AppendOnce(ctx, &later); err != nil || !dup || i != i1 {
		t.Fatalf("again: %d %v %v", i, dup, err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, dir, key, nil)
	if i, dup, err := l2.AppendOnce(ctx, &later); err != nil || !dup || i != i1 {
		t.Fatalf("after a restart: %d %v %v", i, dup, err)
	}
	other := *crl
	other.Digest = entry(2, "k").Container
	if i, dup, err := l2.AppendOnce(ctx, &other); err != nil || dup || i == i1 {
		t.Fatalf("another CRL: %d %v %v", i, dup, err)
	}
}
