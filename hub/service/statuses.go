package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/document"
)

// StatusSignature returns the reporting unit's signature over one status of
// a document's history (container.SignStatus), by its SHA-256 (the
// history's signature_sha256), as archived with the status (or beside it,
// in archives written before signatures went into the status's object);
// the entry it signs comes with it. For those who may verify, as the
// receipt.
func (svc *Service) StatusSignature(ctx context.Context, who *auth.Identity, id document.ID, sum string) ([]byte, *index.StatusEntry, error) {
	d, err := svc.Document(ctx, who, id)
	if err != nil {
		return nil, nil, err
	}
	if !who.Can(auth.Verify) {
		return nil, nil, ErrForbidden
	}
	var e *index.StatusEntry
	for i := range d.History {
		if sum != "" && strings.EqualFold(d.History[i].SignatureSHA256, sum) {
			e = &d.History[i]
		}
	}
	if e == nil {
		return nil, nil, fmt.Errorf("%w: no status of document %s is signed with a signature of SHA-256 %s", ErrNotFound, id, sum)
	}
	// The archive's key holds the status's time to the nanosecond, the
	// index to the microsecond: the key is found by listing.
	for o, err := range svc.d.Archive.List(ctx, projection.StatusPrefix(id)) {
		if err != nil {
			return nil, nil, err
		}
		k, err := projection.ParseKey(o.Key)
		if err != nil || (k.Kind != projection.KindStatusSignature && k.Kind != projection.KindStatus) ||
			k.Unit != e.Unit || k.Code != e.Code || k.At.UnixMicro() != e.Time.UnixMicro() {
			continue
		}
		b, _, err := svc.d.Archive.Get(ctx, o.Key)
		if err != nil {
			return nil, nil, err
		}
		if k.Kind == projection.KindStatus {
			if _, b, err = projection.DecodeStatus(b); err != nil || b == nil {
				continue // unreadable, or its signature is beside it
			}
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != strings.ToLower(sum) {
			continue // another signature of the same status (none is archived twice)
		}
		return b, e, nil
	}
	return nil, nil, fmt.Errorf("%w: the signature %s of document %s is indexed but not in the archive", ErrUnavailable, sum, id)
}
