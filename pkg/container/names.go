package container

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxFileNameBytes bounds a payload file's name: the longest name ext4 and
// NTFS take for one path component.
const MaxFileNameBytes = 255

// CheckFileName reports why name cannot be a payload file's name (stored as
// files/<name>), or nil. It is the one rule for both sides: Prepare refuses
// to pack such a file and Open refuses a container that holds one, so that
// whatever the hub accepts every recipient can write to its inbox on
// Windows, macOS or Linux. Refused: empty, "." and ".."; over
// MaxFileNameBytes; not UTF-8; a path (payload files are flat, so no folder
// can share a file's name); the characters Windows reserves (\ : * ? " < >
// |); control and bidirectional-override characters; a leading space, a
// trailing space or dot; and Windows device names (CON, PRN, AUX, NUL,
// COM0-9, LPT0-9, CONIN$, CONOUT$) in any case, with or without an
// extension.
func CheckFileName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errors.New("empty or dot name")
	case len(name) > MaxFileNameBytes:
		return fmt.Errorf("name of %d bytes, longer than %d", len(name), MaxFileNameBytes)
	case !utf8.ValidString(name):
		return errors.New("name is not UTF-8")
	case strings.Contains(name, "/"):
		return errors.New("name is a path: payload files hold no folders")
	case strings.ContainsAny(name, `\:*?"<>|`):
		return errors.New(`name contains a character Windows reserves (\ : * ? " < > |)`)
	case strings.ContainsFunc(name, hiddenRune):
		return errors.New("name contains a control or bidirectional-override character")
	case strings.HasPrefix(name, " ") || strings.HasSuffix(name, " ") || strings.HasSuffix(name, "."):
		return errors.New("name begins or ends with a space or ends with a dot")
	case reservedDevice(name):
		return errors.New("name is a Windows device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9)")
	}
	return nil
}

// hiddenRune: control characters (C0, DEL, C1) and the bidirectional
// overrides and isolates, which make "gnp.exe" read as "exe.png".
func hiddenRune(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f
}

// reservedDevice reports a Windows device name: Windows ignores what follows
// the first dot and trailing spaces before it, so "con", "Con.txt",
// "NUL .tar.gz" and "lpt1.pdf" all open a device, never a file.
func reservedDevice(name string) bool {
	stem, _, _ := strings.Cut(name, ".")
	stem = strings.ToUpper(strings.TrimRight(stem, " "))
	switch stem {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(stem) >= 4 && (strings.HasPrefix(stem, "COM") || strings.HasPrefix(stem, "LPT")) {
		switch stem[3:] {
		case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
			return true
		}
	}
	return false
}
