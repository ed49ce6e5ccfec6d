package inbox

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// UnwritableError is a delivery the inbox folder can never hold, whatever
// is retried: its file names. The agent quarantines such a delivery and
// refuses it rather than retrying forever.
type UnwritableError struct {
	ID      document.ID
	Reasons reason.List
}

func (e *UnwritableError) Error() string {
	return fmt.Sprintf("inbox: %s cannot be written to the folder: %v", e.ID, e.Reasons)
}

// maxNameBytes is the longest file or folder name most file systems take.
const maxNameBytes = 255

// CheckNames returns, with the code container.bad_path, what keeps payload
// file names (relative to files/, slash-separated) from being written the
// same on every system a document system may read the inbox from: empty,
// "." or ".." elements, control characters, characters Windows refuses
// (<>:"\|?*), names ending in a dot or a space (Windows drops them), names
// Windows reserves for devices (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with or
// without an extension), elements over 255 bytes, invalid UTF-8, two names
// equal but for case, and a name that is both a file and a folder
// (files/a beside files/a/b.txt).
func CheckNames(names []string) reason.List {
	var rs reason.List
	bad := func(name, format string, a ...any) {
		rs.Add(reason.ContainerBadPath, "files/"+name+": "+fmt.Sprintf(format, a...))
	}
	files := map[string]string{} // folded name → name
	for _, n := range names {
		if err := checkName(n); err != nil {
			bad(n, "%v", err)
			continue
		}
		k := strings.ToLower(n)
		if prev, ok := files[k]; ok {
			bad(n, "the same file as files/%s where case does not count", prev)
			continue
		}
		files[k] = n
	}
	for _, n := range names {
		if files[strings.ToLower(n)] != n {
			continue
		}
		parts := strings.Split(n, "/")
		for i := 1; i < len(parts); i++ {
			dir := strings.Join(parts[:i], "/")
			if f, ok := files[strings.ToLower(dir)]; ok {
				bad(n, "files/%s is a file, and would have to be a folder too", f)
				break
			}
		}
	}
	return rs
}

func checkName(n string) error {
	if !utf8.ValidString(n) {
		return errors.New("not valid UTF-8")
	}
	if n == "" {
		return errors.New("empty name")
	}
	for _, el := range strings.Split(n, "/") {
		switch {
		case el == "":
			return errors.New("an empty path element")
		case el == "." || el == "..":
			return fmt.Errorf("path element %q", el)
		case len(el) > maxNameBytes:
			return fmt.Errorf("a name of %d bytes, more than %d", len(el), maxNameBytes)
		case strings.HasSuffix(el, ".") || strings.HasSuffix(el, " "):
			return fmt.Errorf("%q ends with a dot or a space, which Windows drops", el)
		case reservedName(el):
			return fmt.Errorf("%q is a device name on Windows", el)
		}
		for _, r := range el {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("control character %U", r)
			}
			if strings.ContainsRune(`<>:"\|?*`, r) {
				return fmt.Errorf("character %q, not allowed on Windows", r)
			}
		}
	}
	return nil
}

// reservedName reports a Windows device name, which Windows reserves with
// any extension and in any case: CON, PRN, AUX, NUL, COM0-9, LPT0-9 (and
// the superscript digits ¹²³), CONIN$, CONOUT$.
func reservedName(el string) bool {
	base, _, _ := strings.Cut(el, ".")
	base = strings.ToUpper(strings.TrimRight(base, " "))
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if rest, ok := strings.CutPrefix(base, "COM"); ok && digit(rest) {
		return true
	}
	if rest, ok := strings.CutPrefix(base, "LPT"); ok && digit(rest) {
		return true
	}
	return false
}

func digit(s string) bool {
	return len(s) == 1 && s[0] >= '0' && s[0] <= '9' || s == "¹" || s == "²" || s == "³"
}

// unwritableName reports whether err, from creating a payload file, says
// this system refuses the name itself (too long, or not a valid name here):
// retrying cannot help.
func unwritableName(err error) bool {
	return errors.Is(err, syscall.ENAMETOOLONG) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EILSEQ)
}
