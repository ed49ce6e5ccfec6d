//go:build !linux

package fsinfo

func deviceOf(string) (uint32, uint32, error) { return 0, 0, errUnsupported }
