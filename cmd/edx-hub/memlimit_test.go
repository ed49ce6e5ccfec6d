package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	meminfo := "MemTotal:        8388608 kB\nMemFree:         1000 kB\n"
	for _, tc := range []struct {
		name  string
		mib   int
		files map[string]string
		want  int64
		from  string
	}{
		{name: "configured", mib: 4096, files: map[string]string{"proc/meminfo": meminfo}, want: 4 * gib, from: "memory_limit_mib"},
		{name: "machine, no cgroup", files: map[string]string{"proc/meminfo": meminfo}, want: 6 * gib, from: "machine"},
		{name: "cgroup v2 max", files: map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory.max": "max\n"}, want: 6 * gib, from: "machine"},
		{name: "cgroup v2 limit", files: map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory.max": "2147483648\n"},
			want: 3 * gib / 2, from: "control group"},
		{name: "cgroup v1 unlimited", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, want: 6 * gib, from: "machine"},
		{name: "cgroup v1 above the machine", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "17179869184\n"}, want: 6 * gib, from: "machine"},
		{name: "cgroup only", files: map[string]string{"sys/fs/cgroup/memory.max": "4294967296\n"}, want: 3 * gib, from: "control group"},
		{name: "nothing readable", files: nil, want: fallbackMemoryLimit, from: "cannot be read"},
		{name: "meminfo unreadable", files: map[string]string{"proc/meminfo": "MemTotal: lots\n"}, want: fallbackMemoryLimit, from: "cannot be read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, from := memoryLimit(tc.mib, root)
			if got != tc.want || !strings.Contains(from, tc.from) {
				t.Fatalf("memoryLimit = %d MiB (%s), want %d MiB (%s)", got>>20, from, tc.want>>20, tc.from)
			}
		})
	}
}

// On this machine the default is a real reading, not the fallback.
func TestMemoryLimitHere(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc/meminfo: not Linux")
	}
	got, from := memoryLimit(0, "/")
	if got == fallbackMemoryLimit || !strings.HasPrefix(from, "3/4 of") {
		t.Fatalf("memoryLimit here = %d MiB (%s)", got>>20, from)
	}
	t.Logf("soft memory limit here: %d MiB, %s", got>>20, from)
}
