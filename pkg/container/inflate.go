package container

import (
	"archive/zip"
	"compress/flate"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"
)

// Errors of reading an entry. errBeyond is a bomb's (its headers lie); the
// others a damaged container's.
var (
	errBeyond   = errors.New("inflates beyond its declared size")
	errShort    = errors.New("inflates to fewer bytes than declared")
	errChecksum = errors.New("CRC-32 mismatch")
)

var flateReaders sync.Pool

// inflater reads one entry from the container's bytes: it yields at most
// the entry's declared size, fails past it (errBeyond) or short of it
// (errShort), and checks the CRC-32 the central directory declares at the
// end. Nothing of the entry is kept beyond the caller's buffer.
type inflater struct {
	src      io.Reader
	fr       io.ReadCloser // a pooled flate reader, when deflated
	crc      hash.Hash32
	n        int64
	declared int64
	want     uint32
	err      error
}

// inflate opens f's content; the declared sizes have passed the limits.
func inflate(f *zip.File) (*inflater, error) {
	if f.Method == zip.Store && f.CompressedSize64 != f.UncompressedSize64 {
		return nil, fmt.Errorf("stored entry with %d bytes compressed and %d uncompressed", f.CompressedSize64, f.UncompressedSize64)
	}
	raw, err := f.OpenRaw()
	if err != nil {
		return nil, err
	}
	x := &inflater{src: raw, crc: crc32.NewIEEE(), declared: int64(f.UncompressedSize64), want: f.CRC32}
	switch f.Method {
	case zip.Store:
	case zip.Deflate:
		if fr, ok := flateReaders.Get().(io.ReadCloser); ok {
			if err := fr.(flate.Resetter).Reset(raw, nil); err != nil {
				return nil, err
			}
			x.fr = fr
		} else {
			x.fr = flate.NewReader(raw)
		}
		x.src = x.fr
	default:
		return nil, fmt.Errorf("compression method %d: only stored and deflated entries are read", f.Method)
	}
	return x, nil
}

func (x *inflater) Read(p []byte) (int, error) {
	if x.err != nil {
		return 0, x.err
	}
	if rem := x.declared - x.n; rem > 0 {
		if int64(len(p)) > rem {
			p = p[:rem]
		}
		n, err := x.src.Read(p)
		x.n += int64(n)
		x.crc.Write(p[:n])
		switch {
		case err == io.EOF && x.n < x.declared:
			x.err = fmt.Errorf("%w: %d of %d", errShort, x.n, x.declared)
		case err == io.EOF:
			// At the declared size: the end is checked on the next call.
		case err != nil:
			x.err = err
		}
		if n > 0 {
			return n, nil
		}
		if x.err != nil {
			return 0, x.err
		}
		if x.n < x.declared {
			return 0, nil
		}
	}
	// At the declared size, the stream must end.
	var one [1]byte
	for range 100 {
		n, err := x.src.Read(one[:])
		switch {
		case n > 0:
			x.err = fmt.Errorf("%w of %d bytes", errBeyond, x.declared)
		case err == io.EOF:
			x.err = io.EOF
			if x.crc.Sum32() != x.want {
				x.err = errChecksum
			}
		case err != nil:
			x.err = err
		default:
			continue
		}
		return 0, x.err
	}
	x.err = io.ErrNoProgress
	return 0, x.err
}

// Close returns the flate reader to its pool.
func (x *inflater) Close() error {
	if x.fr != nil {
		flateReaders.Put(x.fr)
		x.fr = nil
	}
	x.err = errors.New("read after close")
	return nil
}

// readSmall inflates a small entry whole (its declared size has passed its
// bound).
func readSmall(f *zip.File) ([]byte, error) {
	x, err := inflate(f)
	if err != nil {
		return nil, err
	}
	defer x.Close()
	b := make([]byte, f.UncompressedSize64)
	if _, err := io.ReadFull(x, b); err != nil {
		return nil, err
	}
	if _, err := x.Read(nil); err != io.EOF {
		return nil, err
	}
	return b, nil
}
