// Package fsinfo tells what filesystem holds a directory: its type as the
// kernel names it (ext4, xfs, tmpfs, ...), its block device, and for ext3
// and ext4 whether it has a journal.
//
// The hub logs it at start and edx bench reports it beside its figures,
// because the filesystem under the hub's data changes both its safety and
// its speed:
//
//   - An ext4 without a journal needs a check (fsck) after a crash before
//     anything on it can be trusted: the hub's JetStream store, archive and
//     index included.
//   - Only without a journal, ext4's inode allocator skips every inode freed
//     in the last seconds (minutes, while the inode's table block is still
//     dirty), looking each one up; the hub creates two S3 objects and a
//     directory per document. On the 2-core VMs edx is measured on, whose
//     disk is such an ext4, creating a file took 15 µs at rest and 0.3 to
//     1 ms while a hub worked beside it, over half of it in that look-up
//     (perf). Right after deletions, edx bench's S3 PUT ceiling was
//     820-860/s there, against 2,660-2,800/s on a journaled ext4 in a file
//     on the same disk; with nothing deleted shortly before, 2,219/s.
package fsinfo

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Info describes the filesystem that holds Dir.
type Info struct {
	Dir string `json:"dir"`
	// Type is the filesystem's type, as /proc/self/mountinfo names it.
	Type string `json:"type"`
	// Device is the name of its block device (vda, nvme0n1p2, loop0), or
	// "" for one without (tmpfs, a network filesystem).
	Device string `json:"device,omitempty"`
	// Journal tells, for ext3 and ext4 on a block device, whether the
	// filesystem has a journal; nil otherwise.
	Journal *bool `json:"journal,omitempty"`
}

// Unjournaled reports an ext3 or ext4 filesystem known to have no journal.
func (i Info) Unjournaled() bool { return i.Journal != nil && !*i.Journal }

// String is what logs and edx bench show: "ext4 without a journal (vda)".
func (i Info) String() string {
	s := i.Type
	if i.Journal != nil {
		if *i.Journal {
			s += " with a journal"
		} else {
			s += " without a journal"
		}
	}
	if i.Device != "" {
		s += " (" + i.Device + ")"
	}
	return s
}

// Of describes the filesystem that holds dir (Linux only).
func Of(dir string) (Info, error) { return of(dir, "/") }

// errUnsupported: no /proc and /sys to read.
var errUnsupported = errors.New("fsinfo: not supported on this system")

// of reads mountinfo, sysfs and procfs under root ("/"; a tree of files in
// tests) for dir, which is on the device whose numbers stat gives.
func of(dir, root string) (Info, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Info{}, err
	}
	major, minor, err := deviceOf(abs)
	if err != nil {
		return Info{}, fmt.Errorf("fsinfo: %s: %w", dir, err)
	}
	return describe(abs, major, minor, root)
}

// describe finds the filesystem of device major:minor in root's
// /proc/self/mountinfo, its block device's name in /sys/dev/block, and for
// ext3 and ext4 whether /proc/fs/jbd2 holds a journal of that device.
func describe(dir string, major, minor uint32, root string) (Info, error) {
	info := Info{Dir: dir}
	f, err := os.Open(filepath.Join(root, "proc/self/mountinfo"))
	if err != nil {
		return info, fmt.Errorf("fsinfo: %w", err)
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", major, minor)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != want {
			continue
		}
		for i, fd := range fields {
			if fd == "-" && i+1 < len(fields) {
				info.Type = fields[i+1]
				break
			}
		}
		if info.Type != "" {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return info, fmt.Errorf("fsinfo: mountinfo: %w", err)
	}
	if info.Type == "" {
		return info, fmt.Errorf("fsinfo: %s: device %s not in mountinfo", dir, want)
	}
	if link, err := os.Readlink(filepath.Join(root, "sys/dev/block", want)); err == nil {
		info.Device = filepath.Base(link)
	}
	if info.Device != "" && (info.Type == "ext4" || info.Type == "ext3") {
		// jbd2 names each journal it runs <device>-<journal inode>.
		if ents, err := os.ReadDir(filepath.Join(root, "proc/fs/jbd2")); err == nil {
			has := false
			for _, e := range ents {
				ino, ok := strings.CutPrefix(e.Name(), info.Device+"-")
				if ok && ino != "" && strings.Trim(ino, "0123456789") == "" {
					has = true
				}
			}
			info.Journal = &has
		}
	}
	return info, nil
}
