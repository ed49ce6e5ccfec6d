package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// Size limits on what a log serves (C2SP tlog-tiles): a tile is at most 256
// hashes; an entry bundle at most 256 entries of MaxEntrySize; a checkpoint
// with its cosignatures is small.
const (
	MaxCheckpointSize = 64 << 10
	maxTileSize       = layout.TileWidth * 32
	maxBundleSize     = layout.EntryBundleWidth * (2 + MaxEntrySize)
)

// ErrNotFound wraps os.ErrNotExist, as tessera's client expects of fetchers.
var ErrNotFound = os.ErrNotExist

// Client reads a log served as C2SP tlog-tiles over HTTP: the checkpoint,
// tiles and entry bundles, with size limits, and builds proofs from them.
// It trusts nothing it reads: callers verify what the proofs prove.
type Client struct {
	base *url.URL
	http *http.Client
}

// NewClient returns a client for the log at base (for example
// https://hub.example/log/). httpClient may be nil (a client with a 30s
// timeout).
func NewClient(base string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("evidence: log URL %q: want http(s)://host/path/", base)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, http: httpClient}, nil
}

func (c *Client) get(ctx context.Context, p string, limit int64) ([]byte, error) {
	u := c.base.JoinPath(p)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("evidence: get %s: %w", p, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("evidence: get %s: %w", p, ErrNotFound)
	default:
		return nil, fmt.Errorf("evidence: get %s: HTTP %s", p, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("evidence: get %s: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("evidence: get %s: over %d bytes", p, limit)
	}
	return b, nil
}

// ReadCheckpoint returns the log's latest checkpoint as served, unverified.
func (c *Client) ReadCheckpoint(ctx context.Context) ([]byte, error) {
	return c.get(ctx, layout.CheckpointPath, MaxCheckpointSize)
}

// ReadTile returns a tile (tessera client.TileFetcherFunc), the full tile
// when the partial one is gone.
func (c *Client) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	b, err := c.get(ctx, layout.TilePath(level, index, p), maxTileSize)
	if errors.Is(err, ErrNotFound) && p > 0 {
		b, err = c.get(ctx, layout.TilePath(level, index, 0), maxTileSize)
	}
	return b, err
}

// ReadEntryBundle returns an entry bundle (client.EntryBundleFetcherFunc),
// the full one when the partial one is gone.
func (c *Client) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	b, err := c.get(ctx, layout.EntriesPath(index, p), maxBundleSize)
	if errors.Is(err, ErrNotFound) && p > 0 {
		b, err = c.get(ctx, layout.EntriesPath(index, 0), maxBundleSize)
	}
	return b, err
}

// ConsistencyProof builds the proof that the tree of size from is a prefix
// of the tree of size to, from the log's tiles.
func (c *Client) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	return ConsistencyProof(ctx, c.ReadTile, from, to)
}

// InclusionProof builds the proof that the leaf at index is in the tree of
// size size, from the log's tiles.
func (c *Client) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	return InclusionProof(ctx, c.ReadTile, index, size)
}

// Entry returns the raw entry at index from the entry bundles of a tree of
// size size (size > index).
func (c *Client) Entry(ctx context.Context, index, size uint64) ([]byte, error) {
	return ReadEntry(ctx, c.ReadEntryBundle, index, size)
}

// ConsistencyProof builds a consistency proof from tiles read by f.
func ConsistencyProof(ctx context.Context, f client.TileFetcherFunc, from, to uint64) ([][]byte, error) {
	if from > to {
		return nil, fmt.Errorf("evidence: consistency proof from %d to the smaller %d", from, to)
	}
	pb, err := client.NewProofBuilder(ctx, to, f)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	p, err := pb.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("evidence: consistency proof %d to %d: %w", from, to, err)
	}
	return p, nil
}

// InclusionProof builds an inclusion proof from tiles read by f.
func InclusionProof(ctx context.Context, f client.TileFetcherFunc, index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("evidence: leaf %d is not in a tree of %d", index, size)
	}
	pb, err := client.NewProofBuilder(ctx, size, f)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	p, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("evidence: inclusion proof of %d in %d: %w", index, size, err)
	}
	return p, nil
}

// ReadEntry returns the raw entry at index from bundles read by f.
func ReadEntry(ctx context.Context, f client.EntryBundleFetcherFunc, index, size uint64) ([]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("evidence: entry %d is not in a tree of %d", index, size)
	}
	b, err := client.GetEntryBundle(ctx, f, index/layout.EntryBundleWidth, size)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	i := index % layout.EntryBundleWidth
	if i >= uint64(len(b.Entries)) {
		return nil, fmt.Errorf("evidence: the bundle holding entry %d has %d entries", index, len(b.Entries))
	}
	return b.Entries[i], nil
}

// OpenCheckpoint verifies a signed checkpoint (C2SP tlog-checkpoint) with
// the log's key and returns it. origin is the log's origin line (the key's
// name). Signatures by other keys (cosignatures) are ignored here.
func OpenCheckpoint(raw []byte, origin string, logKey note.Verifier) (*log.Checkpoint, error) {
	if len(raw) > MaxCheckpointSize {
		return nil, fmt.Errorf("evidence: checkpoint of %d bytes (max %d)", len(raw), MaxCheckpointSize)
	}
	cp, _, _, err := log.ParseCheckpoint(raw, origin, logKey)
	if err != nil {
		return nil, fmt.Errorf("evidence: checkpoint: %w", err)
	}
	if len(cp.Hash) != sha256.Size {
		return nil, fmt.Errorf("evidence: checkpoint root hash of %d bytes", len(cp.Hash))
	}
	return cp, nil
}

// VerifyInclusion checks that entry is the leaf at index of the tree that cp
// commits to.
func VerifyInclusion(entry []byte, index uint64, hashes [][]byte, cp *log.Checkpoint) error {
	leaf := rfc6962.DefaultHasher.HashLeaf(entry)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, leaf, hashes, cp.Hash); err != nil {
		return fmt.Errorf("evidence: entry %d is not in the tree of %d: %w", index, cp.Size, err)
	}
	return nil
}

// VerifyConsistency checks that the tree of old is a prefix of the tree of
// cur.
func VerifyConsistency(old, cur *log.Checkpoint, hashes [][]byte) error {
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cur.Size, hashes, old.Hash, cur.Hash); err != nil {
		return fmt.Errorf("evidence: the tree of %d is not a prefix of the tree of %d: %w", old.Size, cur.Size, err)
	}
	return nil
}

// ReadAll reads every entry of the tree that cp commits to, in order, from
// bundles read by f, hands each to fn, and checks that the entries hash to
// cp's root: what fn was given is the whole log as the checkpoint's signer
// committed to it, nothing left out or added. fn's error stops the read.
func ReadAll(ctx context.Context, f client.EntryBundleFetcherFunc, cp *log.Checkpoint, fn func(index uint64, entry []byte) error) error {
	r := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for b := uint64(0); b*layout.EntryBundleWidth < cp.Size; b++ {
		bundle, err := client.GetEntryBundle(ctx, f, b, cp.Size)
		if err != nil {
			return fmt.Errorf("evidence: entry bundle %d: %w", b, err)
		}
		want := min(uint64(layout.EntryBundleWidth), cp.Size-b*layout.EntryBundleWidth)
		if uint64(len(bundle.Entries)) < want {
			return fmt.Errorf("evidence: entry bundle %d has %d entries, want %d", b, len(bundle.Entries), want)
		}
		for i, e := range bundle.Entries[:want] {
			idx := b*layout.EntryBundleWidth + uint64(i)
			if err := r.Append(rfc6962.DefaultHasher.HashLeaf(e), nil); err != nil {
				return fmt.Errorf("evidence: entry %d: %w", idx, err)
			}
			if err := fn(idx, e); err != nil {
				return err
			}
		}
	}
	root := rfc6962.DefaultHasher.EmptyRoot()
	if cp.Size > 0 {
		var err error
		if root, err = r.GetRootHash(nil); err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
	}
	if !bytes.Equal(root, cp.Hash) {
		return fmt.Errorf("evidence: the %d entries read do not hash to the checkpoint's root: the log served is not the one signed", cp.Size)
	}
	return nil
}
