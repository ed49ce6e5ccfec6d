package edxml

import (
	"bufio"
	"errors"
	"io"
)

var (
	errPacketTooLarge = errors.New("packet too large")
	errTokenTooLarge  = errors.New("token too large")
)

// input is what the XML decoder reads: an io.ByteReader, so the decoder does
// no buffering of its own and stops exactly at the end of each token. That
// lets the parser take over after the start tag of an attachment's content
// and stream the text itself (contentReader). It also bounds the packet and
// each token (a field's text, a tag, a comment, a directive) before the
// decoder holds more than the limit in memory.
type input struct {
	r       *bufio.Reader
	n       int64 // bytes consumed
	max     int64 // packet limit
	mark    int64 // n at the start of the current token
	maxTok  int64 // token limit
	skipped int64 // bytes consumed by contentReader, never seen by the decoder
	last    [2]byte
}

func newInput(r io.Reader, max, maxTok int64) *input {
	in := &input{r: bufio.NewReaderSize(r, 64<<10), max: max, maxTok: maxTok}
	// A UTF-8 byte order mark, as .NET writers put, is not XML: skip it.
	if b, err := in.r.Peek(3); err == nil && string(b) == "\xef\xbb\xbf" {
		in.r.Discard(3)
		in.n = 3
		in.skipped = 3
		in.mark = 3
	}
	return in
}

// ReadByte gives the decoder one byte, within the packet and token limits.
func (in *input) ReadByte() (byte, error) {
	if in.n-in.mark >= in.maxTok {
		return 0, errTokenTooLarge
	}
	b, err := in.getb()
	if err != nil {
		return 0, err
	}
	in.last[0], in.last[1] = in.last[1], b
	return b, nil
}

// Read makes input an io.Reader; the decoder uses ReadByte.
func (in *input) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := in.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

// getb consumes one byte within the packet limit only.
func (in *input) getb() (byte, error) {
	b, err := in.r.ReadByte()
	if err != nil {
		return 0, err
	}
	in.n++
	if in.n > in.max {
		return 0, errPacketTooLarge
	}
	return b, nil
}

// peekIs reports whether the next bytes are s, without consuming them.
func (in *input) peekIs(s string) bool {
	b, _ := in.r.Peek(len(s))
	return string(b) == s
}

func (in *input) discard(k int) error {
	for i := 0; i < k; i++ {
		if _, err := in.getb(); err != nil {
			return err
		}
	}
	return nil
}

// selfClosed reports whether the last start tag the decoder read was
// self-closing (<X/>): attribute values are quoted, so "/>" ends only those.
func (in *input) selfClosed() bool { return in.last == [2]byte{'/', '>'} }

// contentReader yields the base64 characters of an element's text, read
// straight from the input: whitespace and whitespace character references
// (&#13; and the like, which some writers put at line ends) are dropped,
// CDATA sections opened and comments skipped; it stops, without consuming
// it, at the first other '<'. A base64 text that lacks its final padding
// gets it.
type contentReader struct {
	in      *input
	start   int64
	cdata   bool
	done    bool
	chars   int64 // base64 characters given
	padded  bool  // an '=' was seen
	pad     int   // padding still to give at the end
	padding bool
	err     error
}

func (c *contentReader) consumed() int64 { return c.in.n - c.start }

func (c *contentReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if c.err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, c.err
		}
		if c.done {
			if !c.padding {
				c.padding = true
				if !c.padded {
					switch c.chars % 4 {
					case 2:
						c.pad = 2
					case 3:
						c.pad = 1
					}
				}
			}
			for c.pad > 0 && n < len(p) {
				p[n] = '='
				n++
				c.pad--
			}
			if c.pad == 0 {
				c.err = io.EOF
			}
			continue
		}
		// The common case: a run of plain characters already buffered.
		if k := c.in.r.Buffered(); k > 0 {
			buf, _ := c.in.r.Peek(k)
			i := 0
			for i < len(buf) && n < len(p) {
				b := buf[i]
				if c.cdata && b == ']' || !c.cdata && (b == '<' || b == '&') {
					break
				}
				i++
				switch b {
				case ' ', '\t', '\r', '\n':
					continue
				case '=':
					c.padded = true
				}
				p[n] = b
				n++
				c.chars++
			}
			if i > 0 {
				c.in.r.Discard(i)
				c.in.n += int64(i)
				if c.in.n > c.in.max {
					c.err = errPacketTooLarge
				}
				continue
			}
		}
		if !c.cdata {
			next, err := c.in.r.Peek(1)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				c.err = err
				continue
			}
			if next[0] == '<' {
				switch {
				case c.in.peekIs("<![CDATA["):
					c.cdata = true
					c.err = c.in.discard(9)
				case c.in.peekIs("<!--"):
					c.err = c.skipComment()
				default:
					c.done = true
				}
				continue
			}
		}
		b, err := c.in.getb()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.err = err
			continue
		}
		if c.cdata {
			if b == ']' && c.in.peekIs("]>") {
				c.cdata = false
				c.err = c.in.discard(2)
				continue
			}
		} else if b == '&' {
			c.err = c.charRef()
			continue
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '=':
			c.padded = true
		}
		p[n] = b
		n++
		c.chars++
	}
	return n, nil
}

func (c *contentReader) skipComment() error {
	if err := c.in.discard(4); err != nil {
		return err
	}
	var b0, b1 byte
	for {
		b, err := c.in.getb()
		if err != nil {
			return err
		}
		if b0 == '-' && b1 == '-' && b == '>' {
			return nil
		}
		b0, b1 = b1, b
	}
}

// charRef reads a character reference after '&'; only whitespace ones may
// appear in base64 text.
func (c *contentReader) charRef() error {
	var ref []byte
	for len(ref) < 8 {
		b, err := c.in.getb()
		if err != nil {
			return err
		}
		if b == ';' {
			switch string(ref) {
			case "#9", "#x9", "#10", "#xA", "#xa", "#13", "#xD", "#xd", "#32", "#x20":
				return nil
			}
			return errBadRef
		}
		ref = append(ref, b)
	}
	return errBadRef
}

var errBadRef = errors.New("an entity or character reference other than whitespace")
