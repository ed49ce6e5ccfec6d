package service

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
)

// Search cursors leave the hub sealed: the index's cursor (a keyset
// position, with the relevance score of the last hit, which depends on
// word counts across every unit's documents) is encrypted and
// authenticated with AES-256-GCM under the hub's cursor key, bound to the
// identity that searched and to the query. A client reads nothing from a
// cursor, cannot forge or alter one (400), and cannot use another
// person's, or one from another query (400 too).

// cursorSealVersion starts what is authenticated, so that a later format
// cannot be confused with this one.
const cursorSealVersion = "edx-cursor-1"

// cursorAEAD is the cipher of the cursors under key (32 bytes); with no
// key, a random one for the life of this process (cursors do not survive a
// restart).
func cursorAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("service: cursor key: %w", err)
	}
	return cipher.NewGCM(b)
}

// cursorBinding is what a cursor is bound to: who searched, and the query
// without its cursor and page size.
func cursorBinding(who *auth.Identity, q index.Query) []byte {
	var whoKey string
	if who.Via == auth.ViaAdminToken {
		whoKey = "admin-token"
	} else {
		whoKey = "user:" + strconv.FormatInt(who.User.ID, 10) + ":" + who.User.Name
	}
	q.Cursor, q.Limit = "", 0
	b, _ := json.Marshal(struct {
		Who string
		Q   index.Query
	}{whoKey, q})
	return append([]byte(cursorSealVersion+"\x00"), b...)
}

func (svc *Service) sealCursor(who *auth.Identity, q index.Query, inner string) (string, error) {
	aead := svc.aead
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(inner)+aead.Overhead())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(inner), cursorBinding(who, q))), nil
}

func (svc *Service) openCursor(who *auth.Identity, q index.Query, sealed string) (string, error) {
	aead := svc.aead
	bad := fmt.Errorf("%w: cursor: not one this hub gave you for this search", ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < aead.NonceSize()+aead.Overhead() || len(sealed) > 4096 {
		return "", bad
	}
	inner, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], cursorBinding(who, q))
	if err != nil {
		return "", bad
	}
	return string(inner), nil
}
