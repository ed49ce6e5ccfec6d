package tlog

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
)

// Journal is the embedded backend of a new log: a tessera driver (journal)
// that keeps the tree as C2SP tlog-tiles lays it out in dir (checkpoint,
// tile/...), exactly as tessera's POSIX driver does, and the hub's files
// under dir/evidence/.
//
// It differs from tessera's POSIX driver in what it syncs. POSIX writes every
// batch's entry bundle, tiles and tree state as files, each synced with its
// directory: about eight files and sixteen syncs per batch, and on a busy
// hub twenty batches a second, which also made every other writer on the
// disk (the S3 gateway, NATS, SQLite) wait on the file system's journal.
// Here a batch is one record appended to a journal file and one fdatasync:
// that is what makes its entries' indices durable. The tiles and bundles
// are written without syncing; every few seconds (a mark) the files
// written since the last mark are synced, then the tree's state at that
// size, and the journal before it is dropped. After a crash the log is
// rebuilt from the last mark and the journal: no entry whose index was
// returned is lost, and the tree is the one the published checkpoints
// committed to (a checkpoint only covers journaled entries).
func Journal(ctx context.Context, dir string) (Backend, error) {
	abs, files, err := logDir(dir)
	if err != nil {
		return Backend{}, err
	}
	d := &journalDriver{dir: abs, closed: make(chan struct{})}
	return Backend{Driver: d, Files: files, stopped: d.wait, check: d.check}, nil
}

// DirBackend is the backend of the log in dir: a directory that already
// holds a log written by tessera's POSIX driver (its .state/treeState)
// keeps that driver; any other gets the journal.
func DirBackend(ctx context.Context, dir string) (Backend, error) {
	if _, err := os.Stat(filepath.Join(dir, ".state", "treeState")); err == nil {
		return POSIX(ctx, dir)
	}
	return Journal(ctx, dir)
}

type journalDriver struct {
	dir string
	// For tests: how often to mark (default markEvery), and whether to
	// leave the log at close as a crash would (no last mark).
	markEvery time.Duration
	crash     bool
	closed    chan struct{} // closed once the log, stopped, is marked and unlocked
	log       *slog.Logger  // set by Open

	mu sync.Mutex
	j  *journal // the open log
}

// check says why the open log cannot append, if it cannot (Log.Check).
func (d *journalDriver) check() error {
	d.mu.Lock()
	j := d.j
	d.mu.Unlock()
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failed
}

// wait waits until the log this driver opened has stopped.
func (d *journalDriver) wait(ctx context.Context) error {
	select {
	case <-d.closed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const (
	journalDir = ".journal"
	// markEvery is how often the tree's files are synced and the journal
	// before them dropped (a crash replays at most this much journal).
	markEvery = 5 * time.Second
	// segPrefix names a journal segment by the index of its first entry.
	segPrefix = "seg-"
)

// Appender implements tessera's append lifecycle.
func (d *journalDriver) Appender(ctx context.Context, opts *tessera.AppendOptions) (*tessera.Appender, tessera.LogReader, error) {
	j := &journal{
		dir:       d.dir,
		markEvery: cmp.Or(d.markEvery, markEvery),
		crash:     d.crash,
		entries:   opts.EntriesPath(),
		maxAge:    opts.BatchMaxAge(),
		maxSize:   int(opts.BatchMaxSize()),
		interval:  opts.CheckpointInterval(),
		repub:     opts.CheckpointRepublishInterval(),
		rf:        &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren},
		wake:      make(chan struct{}, 1),
		updated:   make(chan struct{}, 1),
		dirty:     map[string]bool{},
		log:       slog.Default().With("component", "tlog.journal"),
	}
	j.newCP = opts.CheckpointPublisher(j, nil)
	if err := j.open(ctx); err != nil {
		return nil, nil, fmt.Errorf("tlog: journal %s: %w", d.dir, err)
	}
	d.mu.Lock()
	d.j = j
	d.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); j.sequence(ctx) }()
	go func() { defer wg.Done(); j.publishLoop(ctx) }()
	go func() {
		wg.Wait()
		j.close()
		close(d.closed)
	}()
	return &tessera.Appender{Add: j.add}, j, nil
}

// journal is one open log.
type journal struct {
	dir       string
	markEvery time.Duration
	crash     bool
	entries   func(uint64, uint8) string
	maxAge    time.Duration
	maxSize   int
	interval  time.Duration
	repub     time.Duration
	newCP     func(context.Context, uint64, []byte) ([]byte, error)
	rf        *compact.RangeFactory
	log       *slog.Logger
	lock      *os.File

	qmu   sync.Mutex
	queue []*jpending
	wake  chan struct{}

	updated chan struct{} // the tree grew

	mu       sync.Mutex // the tree below, and the journal segment
	rng      *compact.Range
	tiles    [][][]byte // per tile level, the hashes of its rightmost, incomplete tile
	bundle   []byte     // the rightmost, incomplete entry bundle
	seg      *os.File
	segFirst uint64
	dirty    map[string]bool // files written since the last mark
	marked   uint64          // the size of the last mark
	markedAt time.Time
	pubSize  uint64
	pubAt    time.Time
	pubCP    []byte // the checkpoint published last
	failed   error  // a journal write failed: nothing more is sequenced
}

type jpending struct {
	e    *tessera.Entry
	at   time.Time
	done chan addResult
}

func (j *journal) path(name string) string { return filepath.Join(j.dir, filepath.FromSlash(name)) }

// add queues an entry for the next batch.
func (j *journal) add(ctx context.Context, e *tessera.Entry) tessera.IndexFuture {
	p := &jpending{e: e, at: time.Now(), done: make(chan addResult, 1)}
	j.qmu.Lock()
	j.queue = append(j.queue, p)
	j.qmu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
	// The future may be called more than once (tessera's de-duplication
	// hands it to every caller of the same entry).
	return sync.OnceValues(func() (tessera.Index, error) {
		select {
		case r := <-p.done:
			return r.idx, r.err
		case <-ctx.Done():
			return tessera.Index{}, ctx.Err()
		}
	})
}

// sequence writes the queued entries in batches: each batch waits until
// its first entry is maxAge old (or maxSize entries are queued), then is
// appended to the journal and synced, and only then are its indices
// returned.
func (j *journal) sequence(ctx context.Context) {
	for {
		j.qmu.Lock()
		n := len(j.queue)
		var first time.Time
		if n > 0 {
			first = j.queue[0].at
		}
		j.qmu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-j.wake:
			}
			continue
		}
		if wait := j.maxAge - time.Since(first); wait > 0 && (j.maxSize <= 0 || n < j.maxSize) {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				j.failAll(ctx.Err())
				return
			case <-t.C:
			case <-j.wake:
				t.Stop()
				continue
			}
		}
		j.qmu.Lock()
		batch := j.queue
		if j.maxSize > 0 && len(batch) > j.maxSize {
			batch = batch[:j.maxSize:j.maxSize]
			j.queue = slices.Clone(j.queue[j.maxSize:])
		} else {
			j.queue = nil
		}
		j.qmu.Unlock()
		es := make([]*tessera.Entry, len(batch))
		for i, p := range batch {
			es[i] = p.e
		}
		first64, err := j.append(es)
		for i, p := range batch {
			if err != nil {
				p.done <- addResult{err: err}
			} else {
				p.done <- addResult{idx: tessera.Index{Index: first64 + uint64(i)}}
			}
		}
		if err == nil {
			select {
			case j.updated <- struct{}{}:
			default:
			}
		}
	}
}

func (j *journal) failAll(err error) {
	j.qmu.Lock()
	q := j.queue
	j.queue = nil
	j.qmu.Unlock()
	for _, p := range q {
		p.done <- addResult{err: err}
	}
}

// append makes es the log's next entries: one journal record, synced, then
// the tree in memory and the tiles and bundles that es completes.
func (j *journal) append(es []*tessera.Entry) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failed != nil {
		return 0, j.failed
	}
	first := j.rng.End()
	rec := encodeRecord(first, es)
	end, err := j.seg.Seek(0, io.SeekEnd)
	if err != nil {
		j.failed = fmt.Errorf("tlog: journal: %w: the hub must restart", err)
		return 0, j.failed
	}
	if _, err := j.seg.Write(rec); err != nil {
		// A write that failed (a full disk) is taken back, and the next
		// batch tries again; one that cannot be taken back stops the log.
		if terr := j.seg.Truncate(end); terr != nil {
			j.failed = fmt.Errorf("tlog: journal write: %w (and cutting it off: %v): the hub must restart", err, terr)
			return 0, j.failed
		}
		return 0, fmt.Errorf("tlog: journal write: %w", err)
	}
	if err := syscall.Fdatasync(int(j.seg.Fd())); err != nil {
		// After a failed sync what the disk holds is unknown: the log
		// stops, and a restart rebuilds it from what the journal holds.
		j.failed = fmt.Errorf("tlog: journal sync: %w: the hub must restart", err)
		return 0, j.failed
	}
	for i, e := range es {
		if err := j.integrate(first+uint64(i), e); err != nil {
			j.failed = err
			return 0, err
		}
	}
	return first, nil
}

// integrate adds the entry at index to the tree and its rightmost tiles and
// bundle, writing each tile or bundle it completes.
func (j *journal) integrate(index uint64, e *tessera.Entry) error {
	if index != j.rng.End() {
		return fmt.Errorf("tlog: journal: entry %d after tree size %d", index, j.rng.End())
	}
	var werr error
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level%layout.TileHeight != 0 || werr != nil {
			return
		}
		lv := int(id.Level / layout.TileHeight)
		for len(j.tiles) <= lv {
			j.tiles = append(j.tiles, nil)
		}
		if want := id.Index % layout.TileWidth; uint64(len(j.tiles[lv])) != want {
			werr = fmt.Errorf("tlog: journal: tile level %d holds %d hashes, node %d arrived", lv, len(j.tiles[lv]), id.Index)
			return
		}
		j.tiles[lv] = append(j.tiles[lv], slices.Clone(hash))
		if len(j.tiles[lv]) == layout.TileWidth {
			werr = j.write(layout.TilePath(uint64(lv), id.Index/layout.TileWidth, 0), slices.Concat(j.tiles[lv]...))
			j.tiles[lv] = j.tiles[lv][:0]
		}
	}
	if err := j.rng.Append(e.LeafHash(), visit); err != nil {
		return fmt.Errorf("tlog: journal: %w", err)
	}
	if werr != nil {
		return werr
	}
	j.bundle = append(j.bundle, e.MarshalBundleData(index)...)
	if (index+1)%layout.EntryBundleWidth == 0 {
		if err := j.write(j.entries(index/layout.EntryBundleWidth, 0), j.bundle); err != nil {
			return err
		}
		j.bundle = j.bundle[:0]
	}
	return nil
}

// write writes a tile or bundle file (to a temporary name, renamed into
// place, so that a reader never sees half of it) without syncing it; the
// next mark syncs it. An incomplete one (".p/") that exists is left as it
// is.
func (j *journal) write(name string, data []byte) error {
	p := j.path(name)
	if strings.Contains(name, ".p/") {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("tlog: journal: %w", err)
	}
	if err := writeRename(p, data, false); err != nil {
		return fmt.Errorf("tlog: journal: %w", err)
	}
	j.dirty[name] = true
	return nil
}

// writeRename writes data to a temporary file beside p and renames it to p,
// syncing the file first if sync.
func writeRename(p string, data []byte, sync bool) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// partials writes the rightmost, incomplete tiles and bundle of the tree
// as it is now. Their names carry their width, so one already written is
// the same and is left as it is (replacing it with a copy not yet synced
// could lose a file a mark synced).
func (j *journal) partials() error {
	size := j.rng.End()
	for lv, t := range j.tiles {
		n := size >> (layout.TileHeight * uint(lv))
		if w := len(t); w > 0 {
			if err := j.write(layout.TilePath(uint64(lv), n/layout.TileWidth, uint8(w)), slices.Concat(t...)); err != nil {
				return err
			}
		}
	}
	if w := size % layout.EntryBundleWidth; w > 0 {
		if err := j.write(j.entries(size/layout.EntryBundleWidth, uint8(w)), j.bundle); err != nil {
			return err
		}
	}
	return nil
}

// publishLoop publishes a checkpoint when the tree has grown, at most once
// per interval, and marks every markEvery.
func (j *journal) publishLoop(ctx context.Context) {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.updated:
		case <-t.C:
		}
		j.mu.Lock()
		pubAt := j.pubAt
		j.mu.Unlock()
		if wait := j.interval - time.Since(pubAt); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if err := j.publish(ctx); err != nil {
			j.log.Warn("checkpoint not published", "err", err)
		}
		if time.Since(j.markedAt) >= j.markEvery {
			if err := j.mark(); err != nil {
				j.log.Error("tree not synced", "err", err)
			}
		}
	}
}

// publish signs and writes a checkpoint of the tree as it is now, if it
// grew since the last one (or that one is older than the republish
// interval). The tiles it commits to are written first.
func (j *journal) publish(ctx context.Context) error {
	j.mu.Lock()
	size := j.rng.End()
	if size == j.pubSize && !j.pubAt.IsZero() && (j.repub <= 0 || time.Since(j.pubAt) < j.repub) {
		j.mu.Unlock()
		return nil
	}
	if err := j.partials(); err != nil {
		j.mu.Unlock()
		return err
	}
	root, err := j.rng.GetRootHash(nil)
	j.mu.Unlock()
	if err != nil {
		return err
	}
	cp, err := j.newCP(ctx, size, root)
	if err != nil {
		return err
	}
	if err := writeRename(j.path(layout.CheckpointPath), cp, false); err != nil {
		return err
	}
	j.mu.Lock()
	j.pubSize, j.pubAt, j.pubCP = size, time.Now(), cp
	j.mu.Unlock()
	return nil
}

// markState is the tree's state at a mark, synced after every file the
// tree at that size is read from.
type markState struct {
	Size   uint64   `json:"size"`
	Hashes [][]byte `json:"hashes"` // the compact range [0, Size)
}

// mark syncs the files written since the last mark, then the tree's state
// at this size, and drops the journal before it.
func (j *journal) mark() error {
	j.mu.Lock()
	if j.rng.End() == j.marked && len(j.dirty) == 0 && !j.markedAt.IsZero() {
		j.markedAt = time.Now()
		j.mu.Unlock()
		return nil
	}
	if err := j.partials(); err != nil {
		j.mu.Unlock()
		return err
	}
	st := markState{Size: j.rng.End(), Hashes: j.rng.Hashes()}
	dirty := j.dirty
	j.dirty = map[string]bool{}
	if st.Size != j.segFirst {
		// A new segment for what comes after this size.
		seg, err := j.openSegment(st.Size)
		if err != nil {
			j.mu.Unlock()
			return err
		}
		j.seg.Close()
		j.seg, j.segFirst = seg, st.Size
	}
	j.markedAt = time.Now()
	j.mu.Unlock()

	dirs := map[string]bool{}
	for name := range dirty {
		if err := syncPath(j.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for d := filepath.Dir(j.path(name)); len(d) > len(j.dir); d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	dirs[j.dir] = true
	for d := range dirs {
		if err := syncPath(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := writeRename(j.path(journalDir+"/state"), b, true); err != nil {
		return err
	}
	if err := syncPath(j.path(journalDir)); err != nil {
		return err
	}
	// The segments before this size are no longer needed: every segment
	// ends where a mark began the next one.
	segs, err := os.ReadDir(j.path(journalDir))
	if err != nil {
		return err
	}
	for _, e := range segs {
		if strings.HasPrefix(e.Name(), segPrefix) && e.Name() < segName(st.Size) {
			if err := os.Remove(j.path(journalDir + "/" + e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	// The incomplete tiles and bundles that the files synced now complete
	// are no longer needed (a reader of one falls back to the whole).
	for name := range dirty {
		if strings.Contains(name, ".p/") {
			continue
		}
		if err := os.RemoveAll(j.path(name) + ".p"); err != nil {
			return err
		}
	}
	j.mu.Lock()
	j.marked = st.Size
	j.mu.Unlock()
	return nil
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func segName(first uint64) string { return fmt.Sprintf("%s%020d", segPrefix, first) }

func (j *journal) openSegment(first uint64) (*os.File, error) {
	f, err := os.OpenFile(j.path(journalDir+"/"+segName(first)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syncPath(j.path(journalDir)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// close marks the tree once more and lets another process open the log.
func (j *journal) close() {
	j.mu.Lock()
	failed := j.failed
	j.mu.Unlock()
	if failed == nil && !j.crash {
		if err := j.mark(); err != nil {
			j.log.Error("tree not synced at close", "err", err)
		}
	}
	j.mu.Lock()
	j.seg.Close()
	j.failed = errors.New("tlog: journal closed")
	j.mu.Unlock()
	j.lock.Close()
}

// open locks the log, restores the tree from the last mark and replays the
// journal after it, then marks and publishes the result.
func (j *journal) open(ctx context.Context) error {
	if err := os.MkdirAll(j.path(journalDir), 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(j.path(journalDir+"/lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			lock.Close()
			return fmt.Errorf("lock (is another hub using this log?): %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	j.lock = lock
	if err := j.restore(ctx); err != nil {
		lock.Close()
		return err
	}
	if err := j.replay(); err != nil {
		lock.Close()
		return err
	}
	if err := j.mark(); err != nil {
		lock.Close()
		return err
	}
	return j.publish(ctx)
}

// restore reads the tree's state at the last mark and its rightmost tiles
// and bundle.
func (j *journal) restore(ctx context.Context) error {
	j.rng = j.rf.NewEmptyRange(0)
	b, err := os.ReadFile(j.path(journalDir + "/state"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(j.path(layout.CheckpointPath)); err == nil {
			return errors.New("the log has a checkpoint but no journal state: not a journal log")
		}
		return nil
	}
	if err != nil {
		return err
	}
	var st markState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if j.rng, err = j.rf.NewRange(0, st.Size, st.Hashes); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	j.marked = st.Size
	for lv := 0; ; lv++ {
		n := st.Size >> (layout.TileHeight * uint(lv))
		if n == 0 {
			break
		}
		j.tiles = append(j.tiles, nil)
		w := n % layout.TileWidth
		if w == 0 {
			continue
		}
		t, err := j.ReadTile(ctx, uint64(lv), n/layout.TileWidth, uint8(w))
		if err != nil {
			return fmt.Errorf("tile %d/%d.p/%d: %w", lv, n/layout.TileWidth, w, err)
		}
		if len(t) < int(w)*32 {
			return fmt.Errorf("tile %d/%d.p/%d: %d bytes", lv, n/layout.TileWidth, w, len(t))
		}
		for i := range int(w) {
			j.tiles[lv] = append(j.tiles[lv], slices.Clone(t[i*32:(i+1)*32]))
		}
	}
	if w := st.Size % layout.EntryBundleWidth; w > 0 {
		bb, err := j.ReadEntryBundle(ctx, st.Size/layout.EntryBundleWidth, uint8(w))
		if err != nil {
			return fmt.Errorf("entry bundle %d.p/%d: %w", st.Size/layout.EntryBundleWidth, w, err)
		}
		n, err := bundlePrefix(bb, int(w))
		if err != nil {
			return fmt.Errorf("entry bundle %d.p/%d: %w", st.Size/layout.EntryBundleWidth, w, err)
		}
		j.bundle = slices.Clone(bb[:n])
	}
	return nil
}

// bundlePrefix is the length of the first w entries of an entry bundle.
func bundlePrefix(b []byte, w int) (int, error) {
	off := 0
	for range w {
		if len(b)-off < 2 {
			return 0, io.ErrUnexpectedEOF
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2 + n
		if off > len(b) {
			return 0, io.ErrUnexpectedEOF
		}
	}
	return off, nil
}

// replay integrates the journal's entries after the last mark. A record
// cut short at the end of the last segment was never synced, so none of
// its entries was given an index: it is cut off.
func (j *journal) replay() error {
	ents, err := os.ReadDir(j.path(journalDir))
	if err != nil {
		return err
	}
	var segs []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), segPrefix) {
			segs = append(segs, e.Name())
		}
	}
	sort.Strings(segs)
	for i, s := range segs {
		last := i == len(segs)-1
		good, err := j.replaySegment(s)
		if err != nil {
			if !last {
				return fmt.Errorf("journal %s: %w", s, err)
			}
			j.log.Warn("journal: cutting off a record that was never synced", "segment", s, "at", good, "err", err)
			if err := os.Truncate(j.path(journalDir+"/"+s), good); err != nil {
				return err
			}
		}
	}
	j.segFirst = j.rng.End()
	if len(segs) > 0 {
		// Appends go on in the last segment until the mark that follows.
		last := segs[len(segs)-1]
		first, err := strconv.ParseUint(strings.TrimPrefix(last, segPrefix), 10, 64)
		if err != nil {
			return fmt.Errorf("journal %s: bad name", last)
		}
		f, err := os.OpenFile(j.path(journalDir+"/"+last), os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		j.seg, j.segFirst = f, first
		return nil
	}
	j.seg, err = j.openSegment(j.segFirst)
	return err
}

// replaySegment integrates a segment's records past the tree's size and
// returns the length of its whole records.
func (j *journal) replaySegment(name string) (int64, error) {
	f, err := os.Open(j.path(journalDir + "/" + name))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var good int64
	for {
		first, datas, n, err := readRecord(r)
		if errors.Is(err, io.EOF) {
			return good, nil
		}
		if err != nil {
			return good, err
		}
		for i, d := range datas {
			idx := first + uint64(i)
			if idx < j.rng.End() {
				continue
			}
			if err := j.integrate(idx, tessera.NewEntry(d)); err != nil {
				return good, err
			}
		}
		good += n
	}
}

// A journal record: magic, the first entry's index, the number of entries,
// each entry's length (4 bytes) and data, and a CRC-32C of all before it.
const recordMagic = 0x65647831 // "edx1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeRecord(first uint64, es []*tessera.Entry) []byte {
	n := 16 + 4
	for _, e := range es {
		n += 4 + len(e.Data())
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, recordMagic)
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint32(b, uint32(len(es)))
	for _, e := range es {
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.Data())))
		b = append(b, e.Data()...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// readRecord reads one record; io.EOF at a clean end, another error for a
// record cut short or damaged.
func readRecord(r *bufio.Reader) (first uint64, datas [][]byte, n int64, err error) {
	var h [16]byte
	if k, err := io.ReadFull(r, h[:]); err != nil {
		if k == 0 && errors.Is(err, io.EOF) {
			return 0, nil, 0, io.EOF
		}
		return 0, nil, 0, io.ErrUnexpectedEOF
	}
	if binary.BigEndian.Uint32(h[:]) != recordMagic {
		return 0, nil, 0, errors.New("not a record")
	}
	first = binary.BigEndian.Uint64(h[4:])
	count := binary.BigEndian.Uint32(h[12:])
	if count == 0 || count > 1<<20 {
		return 0, nil, 0, fmt.Errorf("record of %d entries", count)
	}
	sum := crc32.Update(0, castagnoli, h[:])
	n = 16
	var l [4]byte
	for range count {
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, 0, io.ErrUnexpectedEOF
		}
		size := binary.BigEndian.Uint32(l[:])
		if size > 1<<24 {
			return 0, nil, 0, fmt.Errorf("entry of %d bytes", size)
		}
		d := make([]byte, size)
		if _, err := io.ReadFull(r, d); err != nil {
			return 0, nil, 0, io.ErrUnexpectedEOF
		}
		sum = crc32.Update(sum, castagnoli, l[:])
		sum = crc32.Update(sum, castagnoli, d)
		datas = append(datas, d)
		n += 4 + int64(size)
	}
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return 0, nil, 0, io.ErrUnexpectedEOF
	}
	if binary.BigEndian.Uint32(l[:]) != sum {
		return 0, nil, 0, errors.New("record checksum mismatch")
	}
	return first, datas, n + 4, nil
}

// ReadCheckpoint implements tessera.LogReader: the checkpoint this process
// published last (tessera's publication awaiter asks 20 times a second),
// or the one on disk.
func (j *journal) ReadCheckpoint(_ context.Context) ([]byte, error) {
	j.mu.Lock()
	cp := j.pubCP
	j.mu.Unlock()
	if cp != nil {
		return slices.Clone(cp), nil
	}
	b, err := os.ReadFile(j.path(layout.CheckpointPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, os.ErrNotExist
	}
	return b, err
}

// ReadTile implements tessera.LogReader: an incomplete tile no longer kept
// is read from the whole tile.
func (j *journal) ReadTile(_ context.Context, level, index uint64, p uint8) ([]byte, error) {
	return partialOrFull(p, func(p uint8) ([]byte, error) { return os.ReadFile(j.path(layout.TilePath(level, index, p))) })
}

// ReadEntryBundle implements tessera.LogReader.
func (j *journal) ReadEntryBundle(_ context.Context, index uint64, p uint8) ([]byte, error) {
	return partialOrFull(p, func(p uint8) ([]byte, error) { return os.ReadFile(j.path(j.entries(index, p))) })
}

func partialOrFull(p uint8, read func(uint8) ([]byte, error)) ([]byte, error) {
	b, err := read(p)
	if errors.Is(err, fs.ErrNotExist) && p > 0 {
		b, err = read(0)
	}
	if err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	return b, nil
}

// IntegratedSize implements tessera.LogReader: the size of the last
// checkpoint, whose tiles are all written.
func (j *journal) IntegratedSize(context.Context) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pubSize, nil
}

// NextIndex implements tessera.LogReader.
func (j *journal) NextIndex(context.Context) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.rng.End(), nil
}
