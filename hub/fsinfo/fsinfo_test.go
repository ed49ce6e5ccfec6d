package fsinfo

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// fakeRoot writes a /proc and /sys tree: mountinfo lines, the block
// devices' links (major:minor -> name) and the journals jbd2 runs.
func fakeRoot(t *testing.T, mountinfo string, devs map[string]string, journals ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"proc/self", "sys/dev/block", "proc/fs/jbd2"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "proc/self/mountinfo"), []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	for num, name := range devs {
		if err := os.Symlink("../../devices/virtual/block/"+name, filepath.Join(root, "sys/dev/block", num)); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range journals {
		if err := os.Mkdir(filepath.Join(root, "proc/fs/jbd2", j), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const mountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
23 22 0:5 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334192k
24 22 0:45 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683584k
25 22 7:0 / /mnt/edxfs rw,relatime shared:12 master:3 - ext4 /dev/loop0 rw
26 22 253:0 / /srv rw,relatime - ext4 /dev/mapper/vg-srv rw
27 22 259:2 / /var/lib/edx rw,relatime - xfs /dev/nvme0n1p2 rw,attr2
`

func TestDescribe(t *testing.T) {
	devs := map[string]string{"254:0": "vda", "7:0": "loop0", "253:0": "dm-0", "259:2": "nvme0n1p2"}
	// vda1-8 is another device's journal, not vda's; dm-0's name has a '-'.
	root := fakeRoot(t, mountinfo, devs, "loop0-8", "vda1-8", "dm-0-8")
	yes, no := true, false
	for _, tc := range []struct {
		major, minor uint32
		want         Info
		says         string
	}{
		{254, 0, Info{Type: "ext4", Device: "vda", Journal: &no}, "ext4 without a journal (vda)"},
		{7, 0, Info{Type: "ext4", Device: "loop0", Journal: &yes}, "ext4 with a journal (loop0)"},
		{253, 0, Info{Type: "ext4", Device: "dm-0", Journal: &yes}, "ext4 with a journal (dm-0)"},
		{259, 2, Info{Type: "xfs", Device: "nvme0n1p2"}, "xfs (nvme0n1p2)"},
		{0, 45, Info{Type: "tmpfs"}, "tmpfs"},
	} {
		got, err := describe("/d", tc.major, tc.minor, root)
		if err != nil {
			t.Fatalf("%d:%d: %v", tc.major, tc.minor, err)
		}
		tc.want.Dir = "/d"
		if got.String() != tc.says || got.Type != tc.want.Type || got.Device != tc.want.Device ||
			(got.Journal == nil) != (tc.want.Journal == nil) || got.Journal != nil && *got.Journal != *tc.want.Journal {
			t.Errorf("%d:%d: got %+v %q, want %+v %q", tc.major, tc.minor, got, got, tc.want, tc.says)
		}
		if got.Unjournaled() != (tc.says == "ext4 without a journal (vda)") {
			t.Errorf("%d:%d: Unjournaled() = %v", tc.major, tc.minor, got.Unjournaled())
		}
	}
	if _, err := describe("/d", 8, 1, root); err == nil {
		t.Error("a device not mounted: no error")
	}
	// Without /proc/fs/jbd2 (no ext4 journal ever ran here), unknown
	// rather than "without".
	if err := os.RemoveAll(filepath.Join(root, "proc/fs/jbd2")); err != nil {
		t.Fatal(err)
	}
	if got, err := describe("/d", 254, 0, root); err != nil || got.Journal != nil {
		t.Errorf("no jbd2 directory: %+v, %v; want the journal unknown", got, err)
	}
}

// TestOfThisMachine reads the real /proc for a temporary directory and
// checks the type against the filesystem's magic number (statfs), for the
// types whose number it knows.
func TestOfThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := Of(t.TempDir()); err == nil {
			t.Fatal("no error off Linux")
		}
		return
	}
	dir := t.TempDir()
	got, err := Of(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	magic := map[int64]string{0xEF53: "ext4", 0x01021994: "tmpfs", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x794C7630: "overlay"}
	want, known := magic[int64(st.Type)]
	switch {
	case got.Type == "":
		t.Fatalf("%s: no type", dir)
	case known && want == "ext4" && (got.Type == "ext3" || got.Type == "ext2"):
	case known && got.Type != want:
		t.Fatalf("%s: type %q, statfs says %q", dir, got.Type, want)
	}
	t.Logf("%s: %s", dir, got)
}
