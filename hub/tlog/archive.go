package tlog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"slices"
	"strings"

	"github.com/transparency-dev/tessera/api/layout"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/pkg/evidence"
)

// ArchiveReader reads the archive a log is mirrored to (*archive.Store).
type ArchiveReader interface {
	Get(ctx context.Context, key string) ([]byte, archive.Object, error)
	List(ctx context.Context, prefix string) iter.Seq2[archive.Object, error]
}

// VKeyName is the object beside a mirrored log that holds the log's public
// key (its note verifier key, whose name is the origin), written once by
// the hub that writes the log.
const VKeyName = "vkey"

// Mirrored is a log as Mirror leaves it in the archive under a prefix: it
// reads the time-stamped checkpoints, their tokens, tiles and entry
// bundles, and builds proofs from them, with no hub running. Nothing it
// reads is trusted: callers verify what the proofs prove.
type Mirrored struct {
	a      ArchiveReader
	prefix string
}

// OpenMirror reads the log mirrored under prefix (ending in /).
func OpenMirror(a ArchiveReader, prefix string) *Mirrored {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Mirrored{a: a, prefix: prefix}
}

// Mirrors lists the prefixes under root (for example "tlog/") of the logs
// mirrored to the archive: every prefix holding a vkey.
func Mirrors(ctx context.Context, a ArchiveReader, root string) ([]string, error) {
	var out []string
	for o, err := range a.List(ctx, root) {
		if err != nil {
			return nil, fmt.Errorf("tlog: list %s: %w", root, err)
		}
		if p, ok := strings.CutSuffix(o.Key, "/"+VKeyName); ok {
			out = append(out, p+"/")
		}
	}
	return out, nil
}

// Prefix is where the log is mirrored.
func (m *Mirrored) Prefix() string { return m.prefix }

func (m *Mirrored) get(ctx context.Context, name string) ([]byte, error) {
	b, _, err := m.a.Get(ctx, m.prefix+name)
	if errors.Is(err, archive.ErrNotFound) {
		return nil, fmt.Errorf("tlog: archive %s%s: %w", m.prefix, name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("tlog: archive %s%s: %w", m.prefix, name, err)
	}
	return b, nil
}

// VKey returns the public key written beside the mirror (unverified: an
// auditor compares it with the key the hub published).
func (m *Mirrored) VKey(ctx context.Context) (string, error) {
	b, err := m.get(ctx, VKeyName)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Sizes returns the sizes of the mirrored (time-stamped) checkpoints,
// ascending. A checkpoint is mirrored last, after its tree and token.
func (m *Mirrored) Sizes(ctx context.Context) ([]uint64, error) {
	var out []uint64
	dir := m.prefix + "checkpoints/"
	for o, err := range m.a.List(ctx, dir) {
		if err != nil {
			return nil, fmt.Errorf("tlog: list %s: %w", dir, err)
		}
		if n, ok := number(strings.TrimPrefix(o.Key, dir)); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Checkpoint returns the mirrored checkpoint of size size, as time-stamped.
func (m *Mirrored) Checkpoint(ctx context.Context, size uint64) ([]byte, error) {
	return m.get(ctx, checkpointName(size))
}

// Timestamp returns the token over the mirrored checkpoint of size size.
func (m *Mirrored) Timestamp(ctx context.Context, size uint64) ([]byte, error) {
	return m.get(ctx, timestampName(size))
}

// Cosigned returns the mirrored checkpoint of size size with the
// cosignatures mirrored with it.
func (m *Mirrored) Cosigned(ctx context.Context, size uint64) ([]byte, error) {
	cp, err := m.Checkpoint(ctx, size)
	if err != nil {
		return nil, err
	}
	dir := fmt.Sprintf("%scosignatures/%d/", m.prefix, size)
	out := slices.Clip(cp)
	for o, err := range m.a.List(ctx, dir) {
		if err != nil {
			return nil, fmt.Errorf("tlog: list %s: %w", dir, err)
		}
		line, err := m.get(ctx, strings.TrimPrefix(o.Key, m.prefix))
		if err != nil {
			return nil, err
		}
		out = append(out, line...)
	}
	return out, nil
}

// ReadTile reads a tile (tessera client.TileFetcherFunc), the full one when
// the partial one is not there.
func (m *Mirrored) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	b, err := m.get(ctx, layout.TilePath(level, index, p))
	if errors.Is(err, fs.ErrNotExist) && p > 0 {
		if b, err = m.get(ctx, layout.TilePath(level, index, 0)); err == nil && len(b) >= int(p)*32 {
			b = b[:int(p)*32]
		}
	}
	return b, err
}

// ReadEntryBundle reads an entry bundle (client.EntryBundleFetcherFunc),
// the full one when the partial one is not there.
func (m *Mirrored) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	b, err := m.get(ctx, layout.EntriesPath(index, p))
	if errors.Is(err, fs.ErrNotExist) && p > 0 {
		b, err = m.get(ctx, layout.EntriesPath(index, 0))
	}
	return b, err
}

// Proof builds the evidence for the entry at index from the mirror, as
// Log.Proof does from the log: its inclusion in the smallest mirrored
// checkpoint that holds it, with its token and the previous one as anchor.
// ErrNotIntegrated: no mirrored checkpoint holds it yet.
func (m *Mirrored) Proof(ctx context.Context, index uint64) (*evidence.Proof, error) {
	sizes, err := m.Sizes(ctx)
	if err != nil {
		return nil, err
	}
	return buildProof(ctx, proofSource{file: m.get, tile: m.ReadTile, bundle: m.ReadEntryBundle}, sizes, index)
}
