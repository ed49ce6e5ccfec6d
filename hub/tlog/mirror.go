package tlog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"

	"github.com/edxhub/edx/hub/archive"
)

// Archive is the write-once object store a log is mirrored to
// (*archive.Store: the hub's S3 archive, with object lock where it has it).
type Archive interface {
	Put(ctx context.Context, key string, data []byte, contentType string, meta map[string]string) (archive.Object, error)
}

// Mirror copies the log as of its time-stamped checkpoint of size size into
// a, under prefix (for example "tlog/"), so that the evidence outlives the
// hub's disk: the tiles and entry bundles of that tree under their
// tlog-tiles paths (prefix+"tile/..."), the checkpoint (prefix+
// "checkpoints/<size>"), its token (prefix+"timestamps/<size>") and the
// cosignatures kept for it so far (prefix+"cosignatures/<size>/<key hash>").
// Every object is written once and never changes (a partial tile has its own
// name), so an S3 bucket with object lock keeps them as they were.
//
// Tiles below the last mirrored size are not written again. A reader of the
// archive lists prefix+"checkpoints/" for the newest size and reads the tree
// with any tlog-tiles client (evidence.ReadEntry, evidence.InclusionProof
// over a fetcher that reads the archive).
func (l *Log) Mirror(ctx context.Context, a Archive, prefix string, size uint64) error {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if !l.isStamped(size) {
		return fmt.Errorf("tlog: mirror: checkpoint %d is not time-stamped", size)
	}
	if done, err := l.mirrored(ctx, prefix); err != nil {
		return err
	} else if done >= size {
		return nil
	} else if err := l.mirrorTree(ctx, a, prefix, done, size); err != nil {
		return err
	}
	put := func(name, ctype string) error {
		b, err := l.files.Get(ctx, name)
		if err != nil {
			return err
		}
		if _, err := a.Put(ctx, prefix+name, b, ctype, nil); err != nil {
			return fmt.Errorf("tlog: mirror: %w", err)
		}
		return nil
	}
	if err := put(timestampName(size), "application/timestamp-token"); err != nil {
		return err
	}
	cos, err := l.files.List(ctx, fmt.Sprintf("cosignatures/%d/", size))
	if err != nil {
		return err
	}
	for _, c := range cos {
		if err := put(c, "text/plain; charset=utf-8"); err != nil {
			return err
		}
	}
	// The checkpoint last: its presence in the archive says the tree under
	// it is complete.
	if err := put(checkpointName(size), "text/plain; charset=utf-8"); err != nil {
		return err
	}
	return l.files.Create(ctx, mirroredName(prefix, size), nil)
}

// mirrorTree writes the tiles and entry bundles of the tree of size size
// that the tree of size from did not already have in full.
func (l *Log) mirrorTree(ctx context.Context, a Archive, prefix string, from, size uint64) error {
	// Entry bundles: the level-0 tiles' entries.
	for i := from / layout.EntryBundleWidth; i*layout.EntryBundleWidth < size; i++ {
		p := layout.PartialTileSize(0, i, size)
		b, err := l.reader.ReadEntryBundle(ctx, i, p)
		if err != nil {
			return fmt.Errorf("tlog: mirror: entry bundle %d: %w", i, err)
		}
		if b, err = truncateBundle(b, p); err != nil {
			return fmt.Errorf("tlog: mirror: entry bundle %d: %w", i, err)
		}
		if _, err := a.Put(ctx, prefix+layout.EntriesPath(i, p), b, "application/octet-stream", nil); err != nil {
			return fmt.Errorf("tlog: mirror: %w", err)
		}
	}
	// Hash tiles, level by level: level L holds nodes of 256^L leaves.
	for level := uint64(0); size>>(8*level) > 0; level++ {
		nodes := size >> (8 * level)
		first := (from >> (8 * level)) / layout.TileWidth
		for i := first; i*layout.TileWidth < nodes; i++ {
			p := layout.PartialTileSize(level, i, size)
			b, err := l.reader.ReadTile(ctx, level, i, p)
			if err != nil {
				return fmt.Errorf("tlog: mirror: tile %d/%d: %w", level, i, err)
			}
			if p > 0 {
				// The partial tile may be gone (the tree grew); the full
				// one starts with the same hashes.
				if len(b) < int(p)*32 {
					return fmt.Errorf("tlog: mirror: tile %d/%d has %d bytes, want %d", level, i, len(b), int(p)*32)
				}
				b = b[:int(p)*32]
			}
			if _, err := a.Put(ctx, prefix+layout.TilePath(level, i, p), b, "application/octet-stream", nil); err != nil {
				return fmt.Errorf("tlog: mirror: %w", err)
			}
		}
	}
	return nil
}

// truncateBundle keeps the first p entries of a bundle (all for p == 0).
func truncateBundle(b []byte, p uint8) ([]byte, error) {
	if p == 0 {
		return b, nil
	}
	var eb api.EntryBundle
	if err := eb.UnmarshalText(b); err != nil {
		return nil, err
	}
	if len(eb.Entries) < int(p) {
		return nil, fmt.Errorf("%d entries, want %d", len(eb.Entries), p)
	}
	n := 0
	for _, e := range eb.Entries[:p] {
		n += 2 + len(e)
	}
	return b[:n], nil
}

// mirrored returns the largest size already mirrored under prefix.
func (l *Log) mirrored(ctx context.Context, prefix string) (uint64, error) {
	names, err := l.files.List(ctx, mirroredDir(prefix))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	var best uint64
	for _, n := range names {
		s, err := strconv.ParseUint(n[strings.LastIndex(n, "/")+1:], 10, 64)
		if err == nil && s > best {
			best = s
		}
	}
	return best, nil
}

func mirroredDir(prefix string) string {
	return "mirrored/" + strings.NewReplacer("/", "_", ".", "_").Replace(prefix+"root") + "/"
}

func mirroredName(prefix string, size uint64) string {
	return fmt.Sprintf("%s%d", mirroredDir(prefix), size)
}
