package witness

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/evidence"
)

// Cosignature is one witness's verified cosignature.
type Cosignature struct {
	Name string
	// Time is the witness's own timestamp inside the cosignature.
	Time time.Time
}

// VerifyQuorum checks that raw is a checkpoint signed by the log (origin,
// logKey) and cosigned by at least quorum of the witnesses, each counted
// once. Cosignatures by unknown keys are ignored, and so is a cosignature by
// a known key that does not verify (the hub cannot spoil a good quorum by
// appending garbage). It returns the checkpoint and the witnesses whose
// cosignatures verified.
func VerifyQuorum(raw []byte, origin string, logKey note.Verifier, witnesses []note.Verifier, quorum int) (*log.Checkpoint, []Cosignature, error) {
	if quorum < 1 || quorum > len(witnesses) {
		return nil, nil, fmt.Errorf("witness: quorum %d of %d witnesses", quorum, len(witnesses))
	}
	cp, err := evidence.OpenCheckpoint(raw, origin, logKey)
	if err != nil {
		return nil, nil, fmt.Errorf("witness: %w", err)
	}
	n, err := note.Open(raw, note.VerifierList(logKey))
	if err != nil {
		return nil, nil, fmt.Errorf("witness: %w", err)
	}
	type key struct {
		name string
		hash uint32
	}
	byKey := make(map[key]note.Verifier, len(witnesses))
	for _, w := range witnesses {
		byKey[key{w.Name(), w.KeyHash()}] = w
	}
	seen := map[key]bool{}
	var got []Cosignature
	for _, s := range n.UnverifiedSigs {
		k := key{s.Name, s.Hash}
		v, ok := byKey[k]
		if !ok || seen[k] {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil || len(sig) < 4 || binary.BigEndian.Uint32(sig) != s.Hash {
			continue
		}
		if !v.Verify([]byte(n.Text), sig[4:]) {
			continue
		}
		seen[k] = true
		t, _ := fnote.CoSigV1Timestamp(s)
		got = append(got, Cosignature{Name: s.Name, Time: t.UTC()})
	}
	if len(got) < quorum {
		return cp, got, fmt.Errorf("witness: %d of the %d cosignatures required", len(got), quorum)
	}
	return cp, got, nil
}

// AddCosignatures appends cosignature lines to a signed checkpoint, each
// line once ("— name base64\n", as Witness.Update returns them).
func AddCosignatures(checkpoint []byte, lines ...[]byte) ([]byte, error) {
	if !bytes.Contains(checkpoint, []byte("\n\n")) || !bytes.HasSuffix(checkpoint, []byte("\n")) {
		return nil, errors.New("witness: not a signed note")
	}
	out := bytes.Clone(checkpoint)
	for _, l := range lines {
		if err := checkLine(l); err != nil {
			return nil, err
		}
		if bytes.Contains(out, l) {
			continue
		}
		out = append(out, l...)
	}
	return out, nil
}

// checkLine accepts exactly one note signature line.
func checkLine(l []byte) error {
	s := string(l)
	if !strings.HasPrefix(s, "— ") || !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		return fmt.Errorf("witness: %q is not a signature line", s)
	}
	f := strings.Fields(strings.TrimPrefix(strings.TrimSuffix(s, "\n"), "— "))
	if len(f) != 2 {
		return fmt.Errorf("witness: %q is not a signature line", s)
	}
	if b, err := base64.StdEncoding.DecodeString(f[1]); err != nil || len(b) < 5 {
		return fmt.Errorf("witness: %q is not a signature line", s)
	}
	return nil
}
