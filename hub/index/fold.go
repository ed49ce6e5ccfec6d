package index

import (
	"encoding/hex"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/edxhub/edx/pkg/document"
)

// Fold returns s in the form the index searches: lower case, combining marks
// removed (canonical decomposition, then every Mn rune dropped) and đ/Đ mapped
// to d, so "Quyết định" folds to "quyet dinh" and "ĐẮK LẮK" to "dak lak".
// SQLite's own remove_diacritics leaves đ alone, so folding happens here, the
// same way for indexed text and for queries.
func Fold(s string) string {
	ascii, fast := true, true
	for _, r := range s {
		if r >= utf8.RuneSelf {
			ascii = false
			if foldFast(r) == nil {
				fast = false
				break
			}
		}
	}
	switch {
	case ascii:
		return strings.ToLower(s)
	case fast:
		// Every rune folds on its own (letters of the Latin blocks and
		// combining marks): the table, built by foldSlow, does the work.
		var b strings.Builder
		b.Grow(len(s))
		for _, r := range s {
			if r < utf8.RuneSelf {
				b.WriteByte(byte(unicode.ToLower(r)))
			} else {
				b.WriteString(*foldFast(r))
			}
		}
		return b.String()
	}
	return foldSlow(s)
}

// foldSlow is Fold by its definition.
func foldSlow(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range norm.NFD.String(s) {
		switch {
		case r == 'đ' || r == 'Đ' || r == 'Ð' || r == 'ð':
			// U+0110/U+0111, and U+00D0/U+00F0 (eth) which is often typed for Đ.
			b.WriteByte('d')
		case unicode.Is(unicode.Mn, r):
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// The folds of the runes Vietnamese text is made of: Latin-1 Supplement,
// Latin Extended-A and -B, the combining diacritical marks and Latin
// Extended Additional (where ạ…ỹ live). Their canonical decompositions are a
// letter and combining marks only, so a string of them folds rune by rune
// (TestFoldFast checks every one against foldSlow).
var (
	foldLatin    [0x370 - 0x80]string    // U+0080–U+036F
	foldLatinAdd [0x1F00 - 0x1E00]string // U+1E00–U+1EFF
)

func init() {
	for r := rune(0x80); r < 0x370; r++ {
		foldLatin[r-0x80] = foldSlow(string(r))
	}
	for r := rune(0x1E00); r < 0x1F00; r++ {
		foldLatinAdd[r-0x1E00] = foldSlow(string(r))
	}
}

// foldFast returns r's fold from the tables, or nil when r is not in them.
func foldFast(r rune) *string {
	switch {
	case r >= 0x80 && r < 0x370:
		return &foldLatin[r-0x80]
	case r >= 0x1E00 && r < 0x1F00:
		return &foldLatinAdd[r-0x1E00]
	}
	return nil
}

// Query limits: hostile or pasted input is cut, never rejected.
const (
	maxTerms   = 16
	maxTermLen = 64 // bytes; a cut term is still a valid prefix
)

// tokens splits folded text as the FTS tokenizer (unicode61, whose token
// characters are letters and digits) does.
func tokens(folded string) []string {
	return strings.FieldsFunc(folded, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
}

// terms returns the query terms of user input: its tokens, folded, at most
// maxTerms of at most maxTermLen bytes.
func terms(s string) []string {
	f := tokens(Fold(s))
	if len(f) > maxTerms {
		f = f[:maxTerms]
	}
	for i, t := range f {
		if len(t) > maxTermLen {
			t = t[:maxTermLen]
			for !utf8.ValidString(t) {
				t = t[:len(t)-1]
			}
			f[i] = t
		}
	}
	return f
}

// ftsString quotes s as an FTS5 string: inside double quotes every character
// is literal except the quote itself, which is doubled. Terms come from terms
// and hold only letters and digits, so this is a second line of defence.
func ftsString(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// indexText is the form of a text column in the FTS table: folded, with '_'
// made a separator (as tokens treats it), since '_' is a token character
// there only so that tags can start with it.
func indexText(s string) string { return strings.ReplaceAll(Fold(s), "_", " ") }

// Tags are single tokens in the FTS table's tags column that turn exact
// filters (sender, recipient, either, type, number, status, the signer's
// words) into doclists FTS5 can intersect with the text terms. Each starts
// with '_', which no text token and no query prefix can (see indexText and
// terms), so a tag needs no column filter (the table keeps no columns:
// detail=none), and no document can pose as another's by writing a tag in
// its subject. Unit ids
// have a fixed shape, so dropping the dots keeps them unique; free strings
// are hex-encoded so that any value is one token and no two collide; the
// signer's words are tokens already.
func unitToken(u document.UnitID) string {
	return strings.ToLower(strings.ReplaceAll(string(u), ".", ""))
}

func tagFrom(u document.UnitID) string { return "_s" + unitToken(u) }
func tagTo(u document.UnitID) string   { return "_r" + unitToken(u) }
func tagUnit(u document.UnitID) string { return "_u" + unitToken(u) }
func tagType(t string) string          { return "_k" + hex.EncodeToString([]byte(t)) }
func tagNumber(n string) string {
	return "_n" + hex.EncodeToString([]byte(Fold(strings.TrimSpace(n))))
}

func tagCode(c document.StatusCode) string { return "_c" + string(c) }

// tagSigner is a word of the signer's name (a token, folded): the search
// table keeps no columns (detail=none), so a signer filter is on these.
func tagSigner(token string) string { return "_g" + token }
