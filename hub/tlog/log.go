// Package tlog is the hub's transparency log: every decision the hub makes
// (pkg/evidence entries) appended to a tile-based, append-only log (tessera),
// checkpoints in the C2SP signed-note format signed with the hub's Ed25519
// log key, served read-only over HTTP as C2SP tlog-tiles lays it out, the
// checkpoints time-stamped by an RFC 3161 TSA once per interval, and the
// cosignatures of witnesses (the agents) kept beside the checkpoints.
//
// A decision's evidence is then its entry, its inclusion in a checkpoint N,
// and the TSA's token over checkpoint N (evidence.Proof).
package tlog

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/evidence"
)

// Config is the log's configuration.
type Config struct {
	// Dir is the POSIX log directory of the embedded default (default
	// DATA/tlog, set by the hub).
	Dir string `yaml:"dir"`
	// KeyFile holds the log's note signing key (default DATA/tlog.key, made
	// on first start). Its name is the log's origin.
	KeyFile string `yaml:"key_file"`
	// Origin names the log in its checkpoints when a key is made; C2SP
	// asks for a schema-less URL. Each hub has its own log, so its own
	// origin: the hub sets edx.local/hub/<hub id> when none is configured
	// (this package's default, "edx.local/hub-log", is for one log alone).
	// Once the key exists, its name is the origin.
	Origin string `yaml:"origin"`
	// BatchMaxSize and BatchMaxAge: entries are sequenced and integrated in
	// batches of up to BatchMaxSize entries (default 256). The entries that
	// arrive while a batch is written go together into the next, written
	// as soon as that one is done (group commit); an entry that finds the
	// log idle waits BatchMaxAge (default 100ms) for others to join it.
	// BatchMaxAge is what an entry waits on an idle log, not a pace.
	BatchMaxSize uint          `yaml:"batch_max_size"`
	BatchMaxAge  time.Duration `yaml:"batch_max_age"`
	// BatchInterval is the pace of a busy hub's log: while the machine's
	// CPUs are 80% or more busy, a batch is started at least
	// BatchInterval after the previous one started (default 0: always as
	// soon as it is done). Each write costs a sync whatever its size (the
	// journal's one; tessera's POSIX driver synced about eight files), so
	// fewer, larger writes cost less CPU: with POSIX, in a saturated hub at
	// about 330 entries a second, 50ms took the writes from 6.9% of the
	// hub's CPU to 2.1%, for at most BatchInterval more wait per entry. A
	// hub with CPU to spare is not paced: there the wait would be latency
	// for nothing.
	BatchInterval time.Duration `yaml:"batch_interval"`
	// CheckpointInterval is how often a new checkpoint is published
	// (default 1s, at least 100ms).
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// TimestampInterval is how often the newest checkpoint is time-stamped
	// (default 1m): one TSA request covers every entry of the interval.
	TimestampInterval time.Duration `yaml:"timestamp_interval"`
	// MirrorPrefix is where in the archive Run mirrors each time-stamped
	// checkpoint's tree and evidence (default "tlog/"; see Mirror).
	MirrorPrefix string `yaml:"mirror_prefix"`
	// Disabled, read by the hub, runs it without its log: no decision
	// logged, no checkpoint time-stamped, receipts naming no entry. For
	// measuring the log's cost (edx bench) only.
	Disabled bool `yaml:"disabled"`
}

// SetDefaults fills in the defaults.
func (c *Config) SetDefaults() {
	if c.Origin == "" {
		c.Origin = "edx.local/hub-log"
	}
	if c.BatchMaxSize == 0 {
		c.BatchMaxSize = 256
	}
	if c.BatchMaxAge == 0 {
		c.BatchMaxAge = 100 * time.Millisecond
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.TimestampInterval == 0 {
		c.TimestampInterval = time.Minute
	}
	if c.MirrorPrefix == "" {
		c.MirrorPrefix = "tlog/"
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if !validOrigin(c.Origin) {
		return fmt.Errorf("tlog: origin %q: want a name without spaces or '+', such as edx.example.gov.vn/hub-log", c.Origin)
	}
	if c.BatchMaxSize > 4096 {
		return fmt.Errorf("tlog: batch_max_size %d: want 1 to 4096", c.BatchMaxSize)
	}
	if c.BatchMaxAge < 0 || c.BatchMaxAge > 10*time.Second {
		return fmt.Errorf("tlog: batch_max_age %s: want up to 10s", c.BatchMaxAge)
	}
	if c.BatchInterval < 0 || c.BatchInterval > 10*time.Second {
		return fmt.Errorf("tlog: batch_interval %s: want up to 10s", c.BatchInterval)
	}
	if c.CheckpointInterval != 0 && c.CheckpointInterval < 100*time.Millisecond {
		return fmt.Errorf("tlog: checkpoint_interval %s: want at least 100ms", c.CheckpointInterval)
	}
	if c.TimestampInterval < 0 || (c.TimestampInterval != 0 && c.TimestampInterval < time.Second) {
		return fmt.Errorf("tlog: timestamp_interval %s: want at least 1s", c.TimestampInterval)
	}
	return nil
}

// validOrigin: a note key name (no spaces, no '+') that also names a
// folder of the archive (the mirror's prefix): no empty, "." or ".."
// segment.
func validOrigin(s string) bool {
	if s == "" || len(s) >= 256 || strings.ContainsAny(s, " \t\n+\\") || strings.ToValidUTF8(s, "") != s {
		return false
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// Timestamper gets an RFC 3161 token over a digest (*tsa.Client).
type Timestamper interface {
	Timestamp(ctx context.Context, digest []byte) ([]byte, error)
}

// Deps are what a log works with.
type Deps struct {
	// Signer signs checkpoints (NewKey, EnsureKey); its name is the origin.
	Signer note.Signer
	// Verifier is the signer's verifier (its public key).
	Verifier note.Verifier
	// Timestamper time-stamps checkpoints; nil leaves them unstamped.
	Timestamper Timestamper
	// Archive, when set, receives a mirror of each time-stamped checkpoint
	// (Mirror) from Run.
	Archive Archive
	Logger  *slog.Logger
	// Registerer receives the log's metrics (nil: none registered).
	Registerer prometheus.Registerer
}

// ErrNotIntegrated is returned for an index no published checkpoint covers
// yet.
var ErrNotIntegrated = errors.New("tlog: entry not yet in a published checkpoint")

// Log is the hub's transparency log.
type Log struct {
	cfg      Config
	archive  Archive
	signer   note.Signer
	verifier note.Verifier
	stamper  Timestamper
	log      *slog.Logger
	files    Files
	reader   tessera.LogReader
	add      *group
	shutdown func(context.Context) error
	stopped  func(context.Context) error
	check    func() error
	awaiter  *tessera.PublicationAwaiter
	cancel   context.CancelFunc

	m *metrics

	mu      sync.Mutex
	stamped []uint64 // sizes of time-stamped checkpoints, ascending
	onceMu  sync.Mutex
}

// Open starts the log on backend b. Close stops it.
func Open(ctx context.Context, cfg Config, b Backend, deps Deps) (*Log, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Signer == nil || deps.Verifier == nil {
		return nil, errors.New("tlog: a signer and its verifier are required")
	}
	if deps.Signer.Name() != deps.Verifier.Name() || deps.Signer.KeyHash() != deps.Verifier.KeyHash() {
		return nil, errors.New("tlog: the verifier is not the signer's")
	}
	if b.Driver == nil || b.Files == nil {
		return nil, errors.New("tlog: a backend with a driver and files is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if jd, ok := b.Driver.(*journalDriver); ok {
		jd.log = deps.Logger
	}
	l := &Log{cfg: cfg, archive: deps.Archive, signer: deps.Signer, verifier: deps.Verifier, stamper: deps.Timestamper, log: deps.Logger, files: b.Files,
		m: newMetrics(deps.Registerer)}
	if err := l.loadStamped(ctx); err != nil {
		return nil, err
	}
	// The appender's background work (integration, checkpoints) lives
	// until Close, not until ctx ends.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	age, linger := batching(cfg)
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(deps.Signer).
		WithBatching(cfg.BatchMaxSize, age).
		WithCheckpointInterval(cfg.CheckpointInterval).
		WithAntispam(tessera.DefaultAntispamInMemorySize, nil)
	a, shutdown, r, err := tessera.NewAppender(bg, b.Driver, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tlog: open: %w", err)
	}
	l.stopped, l.check = b.stopped, b.check
	l.add, l.shutdown, l.reader, l.cancel = &group{add: a.Add, off: !groupCommit, linger: linger, max: int(cfg.BatchMaxSize), pace: cfg.BatchInterval,
		hot: (&cpuGauge{limit: busyCPU}).Busy}, shutdown, r, cancel
	l.awaiter = tessera.NewPublicationAwaiter(bg, r.ReadCheckpoint, 50*time.Millisecond)
	return l, nil
}

// Close waits for every appended entry to be integrated and published, then
// stops the log.
func (l *Log) Close(ctx context.Context) error {
	l.add.wait()
	err := l.shutdown(ctx)
	l.cancel()
	if err != nil {
		return fmt.Errorf("tlog: close: %w", err)
	}
	if l.stopped != nil {
		if err := l.stopped(ctx); err != nil {
			return fmt.Errorf("tlog: close: %w", err)
		}
	}
	return nil
}

// Check says why the log cannot append, if its storage knows it cannot
// (the journal after a failed sync, until the hub restarts); /readyz shows
// it.
func (l *Log) Check() error {
	if l.check == nil {
		return nil
	}
	return l.check()
}

// Origin is the log's origin line.
func (l *Log) Origin() string { return l.signer.Name() }

// Verifier is the verifier of the log's checkpoint signatures.
func (l *Log) Verifier() note.Verifier { return l.verifier }

// Reader reads the log's resources (tessera's view, for mirrors and tests).
func (l *Log) Reader() tessera.LogReader { return l.reader }

// Append logs one decision and returns its index once the entry is durably
// sequenced. An entry identical to one this process appended before gets
// the same index (tessera's in-memory de-duplication), so a redelivered
// decision is not logged twice while the hub runs.
func (l *Log) Append(ctx context.Context, e *evidence.Entry) (uint64, error) {
	return l.AppendAsync(ctx, e)()
}

// AppendAsync queues one decision and returns a function that waits for
// its index. Entries are sequenced in the order AppendAsync is called, in
// batches (Config.BatchMaxSize, BatchMaxAge): many callers waiting at once
// share one write.
func (l *Log) AppendAsync(ctx context.Context, e *evidence.Entry) func() (uint64, error) {
	b, err := e.Marshal()
	if err != nil {
		l.m.errors.Inc()
		return func() (uint64, error) { return 0, err }
	}
	start := time.Now()
	f := l.add.Add(ctx, tessera.NewEntry(b))
	return func() (uint64, error) {
		idx, err := f()
		if err != nil {
			l.m.errors.Inc()
			return 0, fmt.Errorf("tlog: append %s: %w", e.Kind, err)
		}
		l.m.seconds.Observe(time.Since(start).Seconds())
		if !idx.IsDup {
			l.m.entries.WithLabelValues(string(e.Kind)).Inc()
		}
		return idx.Index, nil
	}
}

// AppendOnce logs a decision unless AppendOnce logged one with the same key
// (evidence.Entry.Key) in this log before, across restarts, and returns its
// index either way (dup reports the earlier one). It is for the decisions
// the hub meets again at each start (the trust store, the CRLs in force) or
// that are rare (units, certificates): it keeps a small file per key. A
// crash between the append and that file logs the decision twice, which
// readers of the log recognise by the key.
func (l *Log) AppendOnce(ctx context.Context, e *evidence.Entry) (index uint64, dup bool, err error) {
	sum := sha256.Sum256([]byte(e.Key()))
	name := "keys/" + hex.EncodeToString(sum[:])
	l.onceMu.Lock()
	defer l.onceMu.Unlock()
	if b, err := l.files.Get(ctx, name); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return n, true, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, false, err
	}
	idx, err := l.Append(ctx, e)
	if err != nil {
		return 0, false, err
	}
	if err := l.files.Create(ctx, name, []byte(strconv.FormatUint(idx, 10)+"\n")); err != nil && !errors.Is(err, fs.ErrExist) {
		return idx, false, err
	}
	return idx, false, nil
}

// Await blocks until a published checkpoint covers index, and returns it.
func (l *Log) Await(ctx context.Context, index uint64) ([]byte, error) {
	_, cp, err := l.awaiter.Await(ctx, func() (tessera.Index, error) { return tessera.Index{Index: index}, nil })
	if err != nil {
		return nil, fmt.Errorf("tlog: await %d: %w", index, err)
	}
	return cp, nil
}

// Checkpoint returns the newest published checkpoint, verified, and its
// bytes.
func (l *Log) Checkpoint(ctx context.Context) (size uint64, raw []byte, err error) {
	raw, err = l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("tlog: checkpoint: %w", err)
	}
	cp, err := evidence.OpenCheckpoint(raw, l.Origin(), l.verifier)
	if err != nil {
		return 0, nil, err
	}
	return cp.Size, raw, nil
}

// Entry returns the raw entry at index as logged.
func (l *Log) Entry(ctx context.Context, index uint64) ([]byte, error) {
	size, _, err := l.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	if index >= size {
		return nil, ErrNotIntegrated
	}
	return evidence.ReadEntry(ctx, l.reader.ReadEntryBundle, index, size)
}

// Proof returns the evidence for the entry at index: its inclusion in the
// smallest time-stamped checkpoint that covers it, with the token, and the
// time-stamped checkpoint before it (which does not hold the entry) with
// the proof of consistency between the two, so that the TSA bounds the
// entry's time on both sides; or, while no time-stamped checkpoint covers
// it yet, its inclusion in the newest checkpoint, without a token.
func (l *Log) Proof(ctx context.Context, index uint64) (*evidence.Proof, error) {
	stamped := l.Stamped()
	if i, _ := slices.BinarySearch(stamped, index+1); i < len(stamped) {
		return buildProof(ctx, l.source(), stamped, index)
	}
	size, cp, err := l.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	if index >= size {
		return nil, ErrNotIntegrated
	}
	entry, err := evidence.ReadEntry(ctx, l.reader.ReadEntryBundle, index, size)
	if err != nil {
		return nil, err
	}
	hashes, err := evidence.InclusionProof(ctx, l.reader.ReadTile, index, size)
	if err != nil {
		return nil, err
	}
	return &evidence.Proof{Index: index, Entry: entry, Checkpoint: cp, Hashes: hashes}, nil
}

// proofSource is where a time-stamped proof is read from: the log itself,
// or its mirror in the archive.
type proofSource struct {
	file       func(ctx context.Context, name string) ([]byte, error) // checkpoints/<size>, timestamps/<size>
	tile       func(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	bundle     func(ctx context.Context, index uint64, p uint8) ([]byte, error)
	notStamped error
}

func (l *Log) source() proofSource {
	return proofSource{file: l.files.Get, tile: l.reader.ReadTile, bundle: l.reader.ReadEntryBundle}
}

// buildProof builds the proof of the entry at index against the smallest
// of the time-stamped sizes (ascending) that covers it, with the previous
// one as its anchor.
func buildProof(ctx context.Context, src proofSource, stamped []uint64, index uint64) (*evidence.Proof, error) {
	i, _ := slices.BinarySearch(stamped, index+1)
	if i == len(stamped) {
		if src.notStamped != nil {
			return nil, src.notStamped
		}
		return nil, ErrNotIntegrated
	}
	size := stamped[i]
	cp, err := src.file(ctx, checkpointName(size))
	if err != nil {
		return nil, err
	}
	tok, err := src.file(ctx, timestampName(size))
	if err != nil {
		return nil, err
	}
	entry, err := evidence.ReadEntry(ctx, src.bundle, index, size)
	if err != nil {
		return nil, err
	}
	hashes, err := evidence.InclusionProof(ctx, src.tile, index, size)
	if err != nil {
		return nil, err
	}
	p := &evidence.Proof{Index: index, Entry: entry, Checkpoint: cp, Hashes: hashes, Timestamp: tok}
	if i > 0 {
		prev := stamped[i-1]
		a := &evidence.Anchor{}
		if a.Checkpoint, err = src.file(ctx, checkpointName(prev)); err != nil {
			return nil, err
		}
		if a.Timestamp, err = src.file(ctx, timestampName(prev)); err != nil {
			return nil, err
		}
		if a.Consistency, err = evidence.ConsistencyProof(ctx, src.tile, prev, size); err != nil {
			return nil, err
		}
		p.Previous = a
	}
	return p, nil
}

// ConsistencyProof proves the tree of size from is a prefix of the tree of
// size to (to at most the published size).
func (l *Log) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	return evidence.ConsistencyProof(ctx, l.reader.ReadTile, from, to)
}

// Stamp time-stamps the newest checkpoint unless it already is, keeps it
// under checkpoints/<size> and the token under timestamps/<size>, and
// returns its size (0 for an empty log, which is not stamped).
func (l *Log) Stamp(ctx context.Context) (uint64, error) {
	if l.stamper == nil {
		return 0, errors.New("tlog: no TSA configured")
	}
	size, raw, err := l.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	if size == 0 {
		return 0, nil
	}
	if l.isStamped(size) {
		return size, nil
	}
	if err := l.keepCheckpoint(ctx, size, raw); err != nil {
		return 0, err
	}
	kept, err := l.files.Get(ctx, checkpointName(size))
	if err != nil {
		return 0, err
	}
	d := sha256.Sum256(kept)
	tok, err := l.stamper.Timestamp(ctx, d[:])
	if err != nil {
		return 0, fmt.Errorf("tlog: time-stamp checkpoint %d: %w", size, err)
	}
	if err := l.files.Create(ctx, timestampName(size), tok); err != nil && !errors.Is(err, fs.ErrExist) {
		return 0, err
	}
	l.mu.Lock()
	if i, found := slices.BinarySearch(l.stamped, size); !found {
		l.stamped = slices.Insert(l.stamped, i, size)
	}
	l.mu.Unlock()
	l.m.stamped.Set(float64(size))
	return size, nil
}

// Run time-stamps the newest checkpoint every TimestampInterval until ctx
// ends, and mirrors every time-stamped checkpoint not yet mirrored to the
// archive when there is one. Failures are logged and retried at the next
// tick.
func (l *Log) Run(ctx context.Context) {
	if l.stamper == nil {
		return
	}
	t := time.NewTicker(l.cfg.TimestampInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if size, err := l.Stamp(ctx); err != nil && ctx.Err() == nil {
			l.m.stampErrors.Inc()
			l.log.Warn("tlog: time-stamp failed", "err", err)
		} else if err == nil && size > 0 {
			l.log.Debug("tlog: checkpoint time-stamped", "size", size)
		}
		if err := l.mirrorStamped(ctx); err != nil && ctx.Err() == nil {
			l.m.mirrorErrors.Inc()
			l.log.Warn("tlog: mirror to the archive failed", "err", err)
		}
	}
}

// mirrorStamped mirrors the time-stamped checkpoints newer than the last
// mirrored one, in order.
func (l *Log) mirrorStamped(ctx context.Context) error {
	if l.archive == nil {
		return nil
	}
	done, err := l.mirrored(ctx, l.cfg.MirrorPrefix)
	if err != nil {
		return err
	}
	for _, s := range l.Stamped() {
		if s <= done {
			continue
		}
		if err := l.Mirror(ctx, l.archive, l.cfg.MirrorPrefix, s); err != nil {
			return err
		}
	}
	return nil
}

// Stamped returns the sizes of the time-stamped checkpoints, ascending.
func (l *Log) Stamped() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.stamped)
}

// AddCosignature keeps a witness's cosignature line ("— name base64\n") on
// the checkpoint of size size, after checking it with the witness's
// verifier w. The checkpoint need not be the newest: the log's checkpoint of
// any size it reached can be made again, byte for byte (CheckpointAt). A
// witness's first cosignature on a checkpoint is kept; later ones are
// ignored.
func (l *Log) AddCosignature(ctx context.Context, size uint64, line []byte, w note.Verifier) error {
	if len(line) > 4096 {
		return errors.New("tlog: cosignature too long")
	}
	cp, err := l.CheckpointAt(ctx, size)
	if err != nil {
		return err
	}
	n, err := note.Open(append(slices.Clip(cp), line...), note.VerifierList(l.verifier, w))
	if err != nil {
		return fmt.Errorf("tlog: cosignature: %w", err)
	}
	ok := false
	for _, s := range n.Sigs {
		ok = ok || (s.Name == w.Name() && s.Hash == w.KeyHash())
	}
	if !ok || len(n.Sigs) != 2 {
		return fmt.Errorf("tlog: the line is not one cosignature by %s", w.Name())
	}
	err = l.files.Create(ctx, cosignatureName(size, w), line)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// Cosigned returns the checkpoint of size size with the cosignatures kept
// for it (the newest checkpoint when size is 0).
func (l *Log) Cosigned(ctx context.Context, size uint64) ([]byte, error) {
	var cp []byte
	var err error
	if size == 0 {
		if size, cp, err = l.Checkpoint(ctx); err != nil {
			return nil, err
		}
		if kept, err := l.files.Get(ctx, checkpointName(size)); err == nil {
			cp = kept
		}
	} else if cp, err = l.files.Get(ctx, checkpointName(size)); err != nil {
		return nil, err
	}
	names, err := l.files.List(ctx, fmt.Sprintf("cosignatures/%d/", size))
	if err != nil {
		return nil, err
	}
	out := slices.Clip(cp)
	for _, n := range names {
		line, err := l.files.Get(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, line...)
	}
	return out, nil
}

// CheckpointAt returns the log's signed checkpoint of size size (at most
// the published size), and keeps it: the stored one when there is one, the
// newest when it has that size, or one made again from the tiles. Tessera
// signs origin, size and root with the Ed25519 log key, which is
// deterministic, so the one made again is the one the log published.
func (l *Log) CheckpointAt(ctx context.Context, size uint64) ([]byte, error) {
	if cp, err := l.files.Get(ctx, checkpointName(size)); err == nil {
		return cp, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	cur, raw, err := l.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case size > cur:
		return nil, fmt.Errorf("tlog: no checkpoint of size %d yet (the newest is %d): %w", size, cur, ErrNotIntegrated)
	case size == 0:
		return nil, errors.New("tlog: the empty tree has no checkpoint kept")
	case size < cur:
		nodes, err := client.FetchRangeNodes(ctx, size, l.reader.ReadTile)
		if err != nil {
			return nil, fmt.Errorf("tlog: checkpoint %d: %w", size, err)
		}
		r, err := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewRange(0, size, nodes)
		if err != nil {
			return nil, fmt.Errorf("tlog: checkpoint %d: %w", size, err)
		}
		root, err := r.GetRootHash(nil)
		if err != nil {
			return nil, fmt.Errorf("tlog: checkpoint %d: %w", size, err)
		}
		if raw, err = note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: l.Origin(), Size: size, Hash: root}.Marshal())}, l.signer); err != nil {
			return nil, fmt.Errorf("tlog: checkpoint %d: %w", size, err)
		}
	}
	if err := l.keepCheckpoint(ctx, size, raw); err != nil {
		return nil, err
	}
	return l.files.Get(ctx, checkpointName(size))
}

// keepCheckpoint stores raw as checkpoints/<size> unless a checkpoint of
// that size is kept already (the same tree: the log never forks itself).
func (l *Log) keepCheckpoint(ctx context.Context, size uint64, raw []byte) error {
	err := l.files.Create(ctx, checkpointName(size), raw)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func (l *Log) loadStamped(ctx context.Context) error {
	names, err := l.files.List(ctx, "timestamps/")
	if err != nil {
		return err
	}
	for _, n := range names {
		s, err := strconv.ParseUint(strings.TrimPrefix(n, "timestamps/"), 10, 64)
		if err != nil {
			continue
		}
		l.stamped = append(l.stamped, s)
	}
	slices.Sort(l.stamped)
	if len(l.stamped) > 0 {
		l.m.stamped.Set(float64(l.stamped[len(l.stamped)-1]))
	}
	return nil
}

func (l *Log) isStamped(size uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, found := slices.BinarySearch(l.stamped, size)
	return found
}

func checkpointName(size uint64) string { return fmt.Sprintf("checkpoints/%d", size) }
func timestampName(size uint64) string  { return fmt.Sprintf("timestamps/%d", size) }
func cosignatureName(size uint64, w note.Verifier) string {
	return fmt.Sprintf("cosignatures/%d/%08x", size, w.KeyHash())
}

// NewKey makes a log key named origin: skey signs (keep it secret), vkey
// verifies (publish it: agents, the CLI and auditors check checkpoints
// with it).
func NewKey(origin string) (skey, vkey string, err error) {
	if !validOrigin(origin) {
		return "", "", fmt.Errorf("tlog: origin %q is not a key name", origin)
	}
	return note.GenerateKey(rand.Reader, origin)
}

// ParseKey returns the signer, verifier and vkey of a note signing key.
func ParseKey(skey string) (note.Signer, note.Verifier, string, error) {
	s, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, nil, "", fmt.Errorf("tlog: log key: %w", err)
	}
	// PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>; base64 may hold '+'.
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 {
		return nil, nil, "", errors.New("tlog: log key: malformed")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, nil, "", errors.New("tlog: log key: not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, nil, "", fmt.Errorf("tlog: log key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, "", fmt.Errorf("tlog: log key: %w", err)
	}
	return s, v, vkey, nil
}

// EnsureKey reads the log key at path, or makes one named origin and writes
// it there (0600), and returns the signer, verifier and vkey.
func EnsureKey(path, origin string) (note.Signer, note.Verifier, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		skey, _, err := NewKey(origin)
		if err != nil {
			return nil, nil, "", err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, "", fmt.Errorf("tlog: %w", err)
		}
		if err := DirFiles(filepath.Dir(path)).Create(context.Background(), filepath.Base(path), []byte(skey+"\n")); err != nil {
			return nil, nil, "", err
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, nil, "", fmt.Errorf("tlog: %w", err)
		}
		b = []byte(skey)
	} else if err != nil {
		return nil, nil, "", fmt.Errorf("tlog: %w", err)
	}
	return ParseKey(string(b))
}

type metrics struct {
	entries      *prometheus.CounterVec
	errors       prometheus.Counter
	seconds      prometheus.Histogram
	stamped      prometheus.Gauge
	stampErrors  prometheus.Counter
	mirrorErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_tlog_entries_total",
			Help: "Decisions appended to the transparency log, by kind (an entry de-duplicated in memory is not counted again)."}, []string{"kind"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_tlog_append_errors_total",
			Help: "Appends to the transparency log that failed (the decision is retried, never taken without its entry)."}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edx_hub_tlog_append_seconds",
			Help:    "Time from an append to its entry durably sequenced (batched with others).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
		stamped: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_tlog_timestamped_size",
			Help: "Size of the newest time-stamped checkpoint: every entry below it has its trusted time."}),
		stampErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_tlog_timestamp_errors_total",
			Help: "Time-stamp requests that no TSA answered with a good token (tried again at the next interval)."}),
		mirrorErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edx_hub_tlog_mirror_errors_total",
			Help: "Mirrors of a time-stamped checkpoint to the archive that failed (tried again at the next interval)."}),
	}
	if reg != nil {
		reg.MustRegister(m.entries, m.errors, m.seconds, m.stamped, m.stampErrors, m.mirrorErrors)
	}
	return m
}
