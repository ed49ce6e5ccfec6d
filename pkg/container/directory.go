package container

import (
	"bytes"
	"encoding/binary"
)

// centralRecords counts the records of a ZIP's central directory, up to
// limit+1, without allocating. zip.NewReader allocates a File for every
// record it finds, reading until a header fails whatever the end record
// says: a 256 MiB container of 47-byte records would cost it gigabytes
// before the entry limit could be checked. The directory is found as
// zip.NewReader finds it (the end record in the last 65 KiB, zip64, an
// offset relative to data prepended to the archive); the count is of the
// consecutive record signatures from there, as many as or more than
// zip.NewReader reads. ok is false when no directory is found (NewReader
// then fails on its own).
func centralRecords(data []byte, limit int) (n int, ok bool) {
	starts, ok := directoryStarts(data)
	if !ok {
		return 0, false
	}
	le16 := func(p int64) int64 { return int64(binary.LittleEndian.Uint16(data[p:])) }
	for _, start := range starts {
		k := 0
		for p := start; p >= 0 && p+46 <= int64(len(data)) && string(data[p:p+4]) == "PK\x01\x02" && k <= limit; k++ {
			p += 46 + le16(p+28) + le16(p+30) + le16(p+32)
		}
		n = max(n, k)
	}
	return n, true
}

// directoryStarts is where zip.NewReader (Go 1.26, readDirectoryEnd) may
// start reading the central directory: one place, or two when the end
// record implies data prepended to the archive (NewReader then reads from
// the offset as given if a valid record is there, which this does not
// check in full).
func directoryStarts(data []byte) ([]int64, bool) {
	size := int64(len(data))
	var end []byte
	var endOffset int64
	for i, n := range []int64{1024, 65 * 1024} {
		n = min(n, size)
		if p := endSignature(data[size-n:]); p >= 0 {
			end, endOffset = data[size-n+int64(p):], size-n+int64(p)
			break
		}
		if i == 1 || n == size {
			return nil, false
		}
	}
	records := uint64(binary.LittleEndian.Uint16(end[10:]))
	dirSize := uint64(binary.LittleEndian.Uint32(end[12:]))
	dirOffset := uint64(binary.LittleEndian.Uint32(end[16:]))
	if records == 0xffff || dirSize == 0xffff || dirOffset == 0xffffffff {
		// zip64: the locator just before the end record names the zip64
		// end record.
		if loc := endOffset - 20; loc >= 0 && string(data[loc:loc+4]) == "PK\x06\x07" &&
			binary.LittleEndian.Uint32(data[loc+4:]) == 0 && binary.LittleEndian.Uint32(data[loc+16:]) == 1 {
			p := binary.LittleEndian.Uint64(data[loc+8:])
			if p > uint64(size) || uint64(size)-p < 56 || string(data[p:p+4]) != "PK\x06\x06" {
				return nil, false
			}
			endOffset = int64(p)
			dirSize = binary.LittleEndian.Uint64(data[p+40:])
			dirOffset = binary.LittleEndian.Uint64(data[p+48:])
		}
	}
	if dirSize > 1<<63-1 || dirOffset > 1<<63-1 {
		return nil, false
	}
	base := endOffset - int64(dirSize) - int64(dirOffset)
	if o := base + int64(dirOffset); o < 0 || o >= size {
		return nil, false
	}
	if base > 0 {
		return []int64{base + int64(dirOffset), int64(dirOffset)}, true
	}
	return []int64{base + int64(dirOffset)}, true
}

// endSignature finds the end of central directory record in b as
// zip.NewReader does: the last signature with room for the record, unless
// its comment overruns b.
func endSignature(b []byte) int {
	if len(b) < 22 {
		return -1
	}
	i := bytes.LastIndex(b[:len(b)-22+4], []byte("PK\x05\x06"))
	if i < 0 || int(binary.LittleEndian.Uint16(b[i+20:]))+22+i > len(b) {
		return -1
	}
	return i
}
