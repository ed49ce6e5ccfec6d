package tlog

import (
	"bytes"
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/evidence"
)

// openBackend opens a log on b with the test's settings.
func openBackend(t testing.TB, b Backend, skey string) *Log {
	t.Helper()
	s, v, _, err := ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(context.Background(), Config{BatchMaxAge: 5 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}, b, Deps{Signer: s, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// backend opens the backend open makes of dir.
func backend(t testing.TB, open func(context.Context, string) (Backend, error), dir string) Backend {
	t.Helper()
	b, err := open(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appendInOrder appends entries from..from+n-1 of tag, in that order, many
// in flight at once, and returns the index of each.
func appendInOrder(t testing.TB, l *Log, from, n int, tag string) []uint64 {
	t.Helper()
	waits := make([]func() (uint64, error), n)
	for i := range n {
		waits[i] = l.AppendAsync(context.Background(), entry(from+i, tag))
	}
	idx := make([]uint64, n)
	for i, w := range waits {
		var err error
		if idx[i], err = w(); err != nil {
			t.Fatal(err)
		}
	}
	return idx
}

// awaitSize waits until the log's checkpoint has size n.
func awaitSize(t testing.TB, l *Log, n uint64) (root []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		size, raw, err := l.Checkpoint(context.Background())
		if err == nil && size == n {
			cp, err := evidence.OpenCheckpoint(raw, l.Origin(), l.Verifier())
			if err != nil {
				t.Fatal(err)
			}
			return cp.Hash
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint size %d (%v), want %d", size, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The journal lays the log out byte for byte as tessera's POSIX driver
// does: the same checkpoint root, entry bundles and tiles, whole and
// partial, for the same entries.
func TestJournalMatchesPOSIX(t *testing.T) {
	key := newKey(t)
	pb := backend(t, POSIX, t.TempDir())
	jb := backend(t, Journal, t.TempDir())
	pl, jl := openBackend(t, pb, key), openBackend(t, jb, key)
	defer pl.Close(context.Background())
	defer jl.Close(context.Background())
	// Several sizes, each checked: a tree of 2×256+77 entries has whole
	// and partial bundles and level-0 tiles, and a partial level-1 tile.
	total := 0
	for _, n := range []int{1, 200, 311, 77} {
		pi := appendInOrder(t, pl, total, n, "m")
		ji := appendInOrder(t, jl, total, n, "m")
		for i := range n {
			if pi[i] != uint64(total+i) || ji[i] != uint64(total+i) {
				t.Fatalf("entry %d: posix index %d, journal %d", total+i, pi[i], ji[i])
			}
		}
		total += n
		size := uint64(total)
		if pr, jr := awaitSize(t, pl, size), awaitSize(t, jl, size); !bytes.Equal(pr, jr) {
			t.Fatalf("size %d: roots differ: posix %x, journal %x", size, pr, jr)
		}
		ctx := t.Context()
		for b := uint64(0); b <= (size-1)/layout.EntryBundleWidth; b++ {
			p := uint8(0)
			if b == size/layout.EntryBundleWidth {
				p = uint8(size % layout.EntryBundleWidth)
			}
			want, err := pl.Reader().ReadEntryBundle(ctx, b, p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := jl.Reader().ReadEntryBundle(ctx, b, p)
			if err != nil {
				t.Fatalf("size %d: bundle %d.p/%d: %v", size, b, p, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d: bundle %d.p/%d differs", size, b, p)
			}
		}
		for lv := uint64(0); size>>(8*lv) > 0; lv++ {
			n := size >> (8 * lv)
			for ti := uint64(0); ti <= (n-1)/layout.TileWidth; ti++ {
				p := uint8(0)
				if ti == n/layout.TileWidth {
					p = uint8(n % layout.TileWidth)
				}
				want, err := pl.Reader().ReadTile(ctx, lv, ti, p)
				if err != nil {
					t.Fatal(err)
				}
				got, err := jl.Reader().ReadTile(ctx, lv, ti, p)
				if err != nil {
					t.Fatalf("size %d: tile %d/%d.p/%d: %v", size, lv, ti, p, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d: tile %d/%d.p/%d differs", size, lv, ti, p)
				}
			}
		}
	}
}

// A hub that crashes loses no entry whose index it returned, and the tree
// it rebuilds is the one its checkpoints committed to. Each round appends,
// then stops as a crash would (no last mark), and the files a crash could
// lose are removed: everything written after the last mark's state (never
// synced) and, at times, a record cut short at the journal's end (never
// synced, so never acknowledged). The log reopened must hold every
// acknowledged entry at its index, its root must be the root of exactly
// those entries, and each checkpoint must be consistent with the last one
// published before the crash.
func TestJournalCrash(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	rng := rand.New(rand.NewPCG(7, 11))
	var logged [][]byte // every acknowledged entry, by index
	var lastCP *log.Checkpoint
	_, v, _, err := ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 8 {
		b := backend(t, Journal, dir)
		d := b.Driver.(*journalDriver)
		d.crash, d.markEvery = true, time.Duration(rng.IntN(300))*time.Millisecond
		l := openBackend(t, b, key)
		size := awaitSizeAtLeast(t, l, uint64(len(logged)))
		if size != uint64(len(logged)) {
			t.Fatalf("round %d: reopened at size %d, %d entries were acknowledged", round, size, len(logged))
		}
		checkTree(t, l, logged, lastCP, v)

		n := 1 + rng.IntN(700)
		from := len(logged)
		idx := appendInOrder(t, l, from, n, "crash")
		for i, x := range idx {
			if x != uint64(from+i) {
				t.Fatalf("round %d: entry %d got index %d", round, from+i, x)
			}
			b, _ := entry(from+i, "crash").Marshal()
			logged = append(logged, b)
		}
		awaitSize(t, l, uint64(len(logged)))
		_, raw, err := l.Checkpoint(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if lastCP, err = evidence.OpenCheckpoint(raw, l.Origin(), v); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		if err := l.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		lost := loseUnsynced(t, dir)
		if rng.IntN(2) == 0 {
			tearJournal(t, dir, rng)
		}
		t.Logf("round %d: %d entries, %d files a crash could lose removed", round, len(logged), lost)
	}
}

func awaitSizeAtLeast(t *testing.T, l *Log, n uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		size, _, err := l.Checkpoint(t.Context())
		if err == nil && size >= n {
			return size
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint size %d (%v), want at least %d", size, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkTree checks that l holds exactly logged, by index, that its root is
// theirs, and that it is consistent with prev.
func checkTree(t *testing.T, l *Log, logged [][]byte, prev *log.Checkpoint, v note.Verifier) {
	t.Helper()
	ctx := t.Context()
	_, raw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := evidence.OpenCheckpoint(raw, l.Origin(), v)
	if err != nil {
		t.Fatal(err)
	}
	r := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, e := range logged {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(e), nil); err != nil {
			t.Fatal(err)
		}
	}
	if root, _ := r.GetRootHash(nil); len(logged) > 0 && !bytes.Equal(root, cp.Hash) {
		t.Fatalf("size %d: the root is not the root of the acknowledged entries", cp.Size)
	}
	for i := range logged {
		if i%37 != 0 && i != len(logged)-1 {
			continue
		}
		got, err := l.Entry(ctx, uint64(i))
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !bytes.Equal(got, logged[i]) {
			t.Fatalf("entry %d differs", i)
		}
	}
	if prev != nil && prev.Size > 0 && prev.Size < cp.Size {
		h, err := l.ConsistencyProof(ctx, prev.Size, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := evidence.VerifyConsistency(prev, cp, h); err != nil {
			t.Fatalf("the log rebuilt after a crash is not consistent with its checkpoint before: %v", err)
		}
	} else if prev != nil && prev.Size == cp.Size && !bytes.Equal(prev.Hash, cp.Hash) {
		t.Fatal("the log rebuilt after a crash forked its checkpoint")
	}
}

// loseUnsynced removes what a crash could lose: every tile, bundle and
// checkpoint written after the last mark's state.
func loseUnsynced(t *testing.T, dir string) int {
	t.Helper()
	st, err := os.Stat(filepath.Join(dir, journalDir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sub := range []string{"tile", "checkpoint"} {
		filepath.WalkDir(filepath.Join(dir, sub), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if i, err := e.Info(); err == nil && i.ModTime().After(st.ModTime()) {
				os.Remove(p)
				n++
			}
			return nil
		})
	}
	return n
}

// tearJournal appends to the last journal segment part of a record, as a
// write cut short by a crash leaves it (never synced: never acknowledged).
func tearJournal(t *testing.T, dir string, rng *rand.Rand) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, journalDir))
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), segPrefix) {
			last = e.Name()
		}
	}
	if last == "" {
		t.Fatal("no journal segment")
	}
	first, _ := strconv.ParseUint(strings.TrimPrefix(last, segPrefix), 10, 64)
	rec := encodeRecord(first, []*tessera.Entry{tessera.NewEntry(bytes.Repeat([]byte{0xa5}, 1+rng.IntN(300)))})
	f, err := os.OpenFile(filepath.Join(dir, journalDir, last), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec[:1+rng.IntN(len(rec)-1)]); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// A damaged record before the journal's end is not a crash's torn write:
// the log refuses to open rather than drop entries it acknowledged.
func TestJournalRefusesDamage(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	b := backend(t, Journal, dir)
	b.Driver.(*journalDriver).crash = true
	l := openBackend(t, b, key)
	appendInOrder(t, l, 0, 10, "d")
	appendInOrder(t, l, 10, 10, "d")
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Two segments: the damaged one is not the last.
	segs, _ := filepath.Glob(filepath.Join(dir, journalDir, segPrefix+"*"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, journalDir, segName(1<<40)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	data[len(data)/3] ^= 1
	if err := os.WriteFile(segs[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	b = backend(t, Journal, dir)
	s, v, _, _ := ParseKey(key)
	if l, err := Open(t.Context(), Config{}, b, Deps{Signer: s, Verifier: v}); err == nil {
		l.Close(t.Context())
		t.Fatal("a log with a damaged journal opened")
	} else if !strings.Contains(err.Error(), "journal "+filepath.Base(segs[0])) {
		t.Fatalf("error %q does not say what is wrong", err)
	}
}

// A directory that holds a log tessera's POSIX driver wrote goes on with
// that driver.
func TestDirBackendKeepsPOSIX(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	b := backend(t, POSIX, dir)
	l := openBackend(t, b, key)
	appendInOrder(t, l, 0, 5, "p")
	root := awaitSize(t, l, 5)
	l.Close(t.Context())
	b = backend(t, DirBackend, dir)
	if _, ok := b.Driver.(*journalDriver); ok {
		t.Fatal("a POSIX log was given the journal")
	}
	l = openBackend(t, b, key)
	defer l.Close(context.Background())
	if got := awaitSize(t, l, 5); !bytes.Equal(got, root) {
		t.Fatal("root changed")
	}
	b2 := backend(t, DirBackend, t.TempDir())
	if _, ok := b2.Driver.(*journalDriver); !ok {
		t.Fatal("a new log was not given the journal")
	}
}

// A journal that can no longer write stops the log and says so (Check,
// which /readyz shows) until the hub restarts; the entries acknowledged
// before are still there after the restart.
func TestJournalStopsAndSays(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	b := backend(t, Journal, dir)
	l := openBackend(t, b, key)
	appendInOrder(t, l, 0, 10, "s")
	if err := l.Check(); err != nil {
		t.Fatalf("a healthy log: %v", err)
	}
	// The segment's descriptor closed under the journal: its next write
	// fails and cannot be cut back.
	j := b.Driver.(*journalDriver).j
	j.mu.Lock()
	j.seg.Close()
	j.mu.Unlock()
	if _, err := l.Append(t.Context(), entry(10, "s")); err == nil {
		t.Fatal("an append to a broken journal succeeded")
	}
	if err := l.Check(); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("Check after a failed write: %v", err)
	}
	if _, err := l.Append(t.Context(), entry(11, "s")); err == nil {
		t.Fatal("a stopped journal appended")
	}
	l.Close(t.Context())
	b = backend(t, Journal, dir)
	l = openBackend(t, b, key)
	defer l.Close(context.Background())
	if err := l.Check(); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	awaitSize(t, l, 10)
	if idx, err := l.Append(t.Context(), entry(12, "s")); err != nil || idx != 10 {
		t.Fatalf("after a restart: index %d, %v", idx, err)
	}
}
