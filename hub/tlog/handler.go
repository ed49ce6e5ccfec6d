package tlog

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
)

// Handler serves the log read-only, as C2SP tlog-tiles lays it out, so
// that any tlog-tiles client can mirror it:
//
//	GET /checkpoint                 the newest checkpoint, with the cosignatures kept for it
//	GET /tile/<L>/<N>[.p/<W>]       Merkle tree tiles
//	GET /tile/entries/<N>[.p/<W>]   entry bundles (pkg/evidence entries)
//
// and the hub's evidence beside it:
//
//	GET /checkpoints/<size>         a kept checkpoint, byte for byte as time-stamped, then its cosignatures
//	GET /timestamps/<size>          the RFC 3161 token over SHA-256 of that checkpoint
//	GET /proof/<index>              the entry's evidence.Proof (JSON)
//
// Mount it under a prefix with http.StripPrefix.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(l.serve)
}

const (
	cacheImmutable = "public, max-age=31536000, immutable"
	cacheNone      = "no-cache"
)

func (l *Log) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	ctx := r.Context()
	switch {
	case p == layout.CheckpointPath:
		b, err := l.Cosigned(ctx, 0)
		l.write(w, b, err, "text/plain; charset=utf-8", cacheNone)
	case strings.HasPrefix(p, "tile/entries/"):
		idx, part, err := layout.ParseTileIndexPartial(strings.TrimPrefix(p, "tile/entries/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		b, err := l.reader.ReadEntryBundle(ctx, idx, part)
		if err == nil && part > 0 {
			// The reader falls back to the full bundle; the spec's path
			// names exactly the partial one.
			var eb api.EntryBundle
			if eb.UnmarshalText(b) != nil || len(eb.Entries) != int(part) {
				err = os.ErrNotExist
			}
		}
		l.write(w, b, err, "application/octet-stream", cacheFor(part))
	case strings.HasPrefix(p, "tile/"):
		level, rest, ok := strings.Cut(strings.TrimPrefix(p, "tile/"), "/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		lv, idx, part, err := layout.ParseTileLevelIndexPartial(level, rest)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		b, err := l.reader.ReadTile(ctx, lv, idx, part)
		if err == nil && part > 0 && len(b) != int(part)*32 {
			err = os.ErrNotExist
		}
		l.write(w, b, err, "application/octet-stream", cacheFor(part))
	case strings.HasPrefix(p, "checkpoints/"):
		size, ok := number(strings.TrimPrefix(p, "checkpoints/"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		b, err := l.Cosigned(ctx, size)
		l.write(w, b, err, "text/plain; charset=utf-8", cacheNone)
	case strings.HasPrefix(p, "timestamps/"):
		size, ok := number(strings.TrimPrefix(p, "timestamps/"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		b, err := l.files.Get(ctx, timestampName(size))
		l.write(w, b, err, "application/timestamp-token", cacheImmutable)
	case strings.HasPrefix(p, "proof/"):
		idx, ok := number(strings.TrimPrefix(p, "proof/"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		pr, err := l.Proof(ctx, idx)
		var b []byte
		if err == nil {
			b, err = json.Marshal(pr)
		}
		l.write(w, b, err, "application/json", cacheNone)
	default:
		http.NotFound(w, r)
	}
}

func (l *Log) write(w http.ResponseWriter, b []byte, err error, ctype, cache string) {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, ErrNotIntegrated):
		http.Error(w, "not found", http.StatusNotFound)
		return
	case err != nil:
		l.log.Warn("tlog: serve", "err", err)
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", cache)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func cacheFor(partial uint8) string {
	if partial > 0 {
		return cacheNone
	}
	return cacheImmutable
}

// number parses a decimal without sign, leading zeros or spaces.
func number(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, false
	}
	return n, true
}
