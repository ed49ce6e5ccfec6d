package tlog

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/tsa"
)

func testArchive(t *testing.T) *archive.Store {
	t.Helper()
	endpoint, access, secret := s3embed.ForTest(t)
	a, err := archive.New(t.Context(), archive.Config{
		Endpoint: endpoint, AccessKey: access, SecretKey: secret,
		Bucket: "t-" + strings.ToLower(rand.Text()[:12]), Region: "us-east-1",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// archiveFetcher reads a mirrored log from the archive, as an auditor would
// once the hub is gone: tlog-tiles paths under the prefix.
type archiveFetcher struct {
	a      *archive.Store
	prefix string
}

func (f archiveFetcher) get(ctx context.Context, p string) ([]byte, error) {
	b, _, err := f.a.Get(ctx, f.prefix+p)
	if errors.Is(err, archive.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", p, evidence.ErrNotFound)
	}
	return b, err
}

func (f archiveFetcher) ReadTile(ctx context.Context, l, i uint64, p uint8) ([]byte, error) {
	return f.get(ctx, layout.TilePath(l, i, p))
}

func (f archiveFetcher) ReadEntryBundle(ctx context.Context, i uint64, p uint8) ([]byte, error) {
	return f.get(ctx, layout.EntriesPath(i, p))
}

// TestMirrorToTheArchive mirrors two time-stamped checkpoints to the S3
// archive (versitygw), then checks every entry's proof from the archive
// alone, and the consistency of the two trees, as if the hub were gone.
func TestMirrorToTheArchive(t *testing.T) {
	ts := newTestTSA(t)
	a := testArchive(t)
	l := openLog(t, t.TempDir(), newKey(t), ts)
	ctx := t.Context()
	appendN(t, l.Log, 0, 300, "s3")
	await(t, l.Log, 299)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	appendN(t, l.Log, 300, 400, "s3")
	await(t, l.Log, 699)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	// The checkpoint of 300 is mirrored after the tree has grown past it:
	// its partial tiles are cut from the full ones.
	for _, size := range []uint64{300, 700, 700} {
		if err := l.Mirror(ctx, a, "tlog/", size); err != nil {
			t.Fatalf("mirror %d: %v", size, err)
		}
	}
	if err := l.Mirror(ctx, a, "tlog/", 12345); err == nil {
		t.Fatal("mirrored a checkpoint that was never time-stamped")
	}

	f := archiveFetcher{a: a, prefix: "tlog/"}
	lv, _ := note.NewVerifier(l.vkey)
	cps := map[uint64]*evidence.Proof{}
	for _, size := range []uint64{300, 700} {
		cp, err := f.get(ctx, fmt.Sprintf("checkpoints/%d", size))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := f.get(ctx, fmt.Sprintf("timestamps/%d", size))
		if err != nil {
			t.Fatal(err)
		}
		cps[size] = &evidence.Proof{Checkpoint: cp, Timestamp: tok}
	}
	for i := uint64(0); i < 700; i += 7 {
		size := uint64(300)
		if i >= 300 {
			size = 700
		}
		e, err := evidence.ReadEntry(ctx, f.ReadEntryBundle, i, size)
		if err != nil {
			t.Fatal(err)
		}
		h, err := evidence.InclusionProof(ctx, f.ReadTile, i, size)
		if err != nil {
			t.Fatal(err)
		}
		p := &evidence.Proof{Index: i, Entry: e, Hashes: h, Checkpoint: cps[size].Checkpoint, Timestamp: cps[size].Timestamp}
		if _, err := p.Verify(evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true}); err != nil {
			t.Fatalf("entry %d from the archive: %v", i, err)
		}
	}
	c300, _ := evidence.OpenCheckpoint(cps[300].Checkpoint, l.Origin(), lv)
	c700, _ := evidence.OpenCheckpoint(cps[700].Checkpoint, l.Origin(), lv)
	h, err := evidence.ConsistencyProof(ctx, f.ReadTile, 300, 700)
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.VerifyConsistency(c300, c700, h); err != nil {
		t.Fatal(err)
	}
	// The partial tile of 300 holds exactly 300 mod 256 hashes.
	if b, err := f.get(ctx, "tile/0/001.p/44"); err != nil || len(b) != 44*32 {
		t.Fatalf("partial tile: %d bytes, %v", len(b), err)
	}
	// The archive refuses to change what was mirrored.
	if _, err := a.Put(ctx, "tlog/checkpoints/700", []byte("forged"), "text/plain", nil); !errors.Is(err, archive.ErrConflict) {
		t.Fatalf("overwriting a mirrored checkpoint: %v", err)
	}
}

// TestRunStampsAndMirrors runs the log's loop with a one-second interval
// until a checkpoint is time-stamped and mirrored.
func TestRunStampsAndMirrors(t *testing.T) {
	ts := newTestTSA(t)
	a := testArchive(t)
	s, v, _, err := ParseKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Journal(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(t.Context(), Config{BatchMaxAge: 10 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond, TimestampInterval: time.Second},
		b, Deps{Signer: s, Verifier: v, Timestamper: ts.client, Archive: a})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	appendN(t, l, 0, 50, "run")
	await(t, l, 49)
	deadline := time.Now().Add(time.Minute)
	for {
		if st := l.Stamped(); len(st) > 0 && st[len(st)-1] == 50 {
			if _, _, err := a.Get(t.Context(), "tlog/checkpoints/50"); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of 50 time-stamped and mirrored within a minute: stamped %v", l.Stamped())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	tok, _, err := a.Get(t.Context(), "tlog/timestamps/50")
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _ := a.Get(t.Context(), "tlog/checkpoints/50")
	d := sha256.Sum256(cp)
	if _, err := tsa.Verify(tok, d[:], ts.roots, time.Time{}); err != nil {
		t.Fatal(err)
	}
}
