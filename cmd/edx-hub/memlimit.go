package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// fallbackMemoryLimit is the soft memory limit where the hub cannot read
// how much memory it has (not Linux).
const fallbackMemoryLimit = 1536 << 20

// memoryLimit returns the Go runtime's soft memory limit for the hub (bytes)
// and where it comes from, for the log. A positive mib is the
// configuration's (memory_limit_mib). Zero is the default: three quarters of
// the memory the hub can have, the smaller of the machine's (MemTotal) and
// its control group's limit (cgroup v2 memory.max or v1
// memory.limit_in_bytes), read under root ("/" but in tests); 1.5 GiB where
// neither can be read.
//
// The limit is soft: past it the collector works harder rather than let the
// heap grow. A fixed default below the hub's working set makes it collect
// without pause: 1.5 GiB did at 10,000 units with the embedded NATS server,
// whose per-unit state alone is some 800 MB live (two thirds of the hub's
// CPU under load went to the collector). A quarter kept free leaves the
// heap's growth between collections (GOGC) room before the limit bites.
func memoryLimit(mib int, root string) (int64, string) {
	if mib > 0 {
		return int64(mib) << 20, "memory_limit_mib"
	}
	avail, from := int64(0), ""
	if total, ok := memTotal(filepath.Join(root, "proc/meminfo")); ok {
		avail, from = total, "the machine's memory"
	}
	for _, f := range []string{"sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if lim, ok := cgroupLimit(filepath.Join(root, f)); ok && (avail == 0 || lim < avail) {
			avail, from = lim, "the control group's limit"
		}
	}
	if avail == 0 {
		return fallbackMemoryLimit, "the default where memory cannot be read"
	}
	return avail / 4 * 3, fmt.Sprintf("3/4 of %s (%d MiB)", from, avail>>20)
}

// memTotal reads MemTotal from a /proc/meminfo.
func memTotal(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil || kb <= 0 {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// cgroupLimit reads a control group's memory limit; "max" (v2) and v1's
// page-rounded maximum are no limit.
func cgroupLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, false
	}
	return n, true
}
