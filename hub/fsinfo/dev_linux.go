package fsinfo

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// deviceOf returns the numbers of the device that holds path.
func deviceOf(path string) (major, minor uint32, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), nil
}
