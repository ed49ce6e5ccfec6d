package protocol

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Staging. A container above InlineLimit travels beside its message, in an
// object store: a sender's submission in UploadBucket (EDX account, units may
// only write there), a delivery in StageBucket (STAGE account, the hub
// writes, units read). Every staged object is encrypted with AES-256-GCM
// under a fresh random key that travels only in the message naming the
// object, and its name is random: a unit that reads or lists a store it
// shares with others sees ciphertext under names it cannot link to anything.
// Only the message's reader (the hub for submissions, the recipient's
// consumer for deliveries) holds the key. The container's SHA-256 in the
// message still binds the plaintext.
//
// Sealed layout: a 12-byte random nonce, then the GCM ciphertext and tag; the
// object name is the additional data, so an object cannot be passed off under
// another name.
//
// A staged submission lives in the upload store for the store's TTL. A
// staged delivery has no TTL: the hub keeps it while a delivery waiting for
// its unit names it (hub/pipeline, stage.go).

// StageKeySize is the size of a staged object's AES-256 key.
const StageKeySize = 32

// StageOverhead is how much larger a sealed object is than its plaintext.
const StageOverhead = 12 + 16

const (
	submitStagePrefix  = "s/"
	deliverStagePrefix = "d/"
	stageNameBytes     = 16 // random bytes in a name: 128 bits, hex
	stageChunkSize     = 128 << 10
	uploadWindow       = 64 // chunks in flight in UploadStaged
)

// ErrStageInvalid marks a staged object that is missing (expired or never
// stored), malformed, too large, or does not decrypt under its key, unlike
// an unreachable server. For a submission it is final: the hub rejects it.
// A delivery's staged object is the hub's: a recipient retries, and the hub
// stages a missing one again from its archive (RestageDelivery).
var ErrStageInvalid = errors.New("protocol: staged object invalid")

// SubmitStageName returns a fresh, unguessable name for a staged submission:
// "s/" and 32 random hex digits.
func SubmitStageName() string { return newStageName(submitStagePrefix) }

// DeliverStageName returns a fresh, unguessable name for a staged delivery:
// "d/" and 32 random hex digits.
func DeliverStageName() string { return newStageName(deliverStagePrefix) }

func newStageName(prefix string) string {
	b := make([]byte, stageNameBytes)
	rand.Read(b) // never fails (crypto/rand)
	return prefix + hex.EncodeToString(b)
}

func validStageName(name, prefix string) error {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || len(rest) != 2*stageNameBytes || strings.Trim(rest, "0123456789abcdef") != "" {
		return fmt.Errorf("want %q and %d lower-case hex digits", prefix, 2*stageNameBytes)
	}
	return nil
}

// SealStage encrypts plain under a fresh random key, bound to the object
// name it will be stored under.
func SealStage(name string, plain []byte) (key, sealed []byte, err error) {
	key = make([]byte, StageKeySize)
	rand.Read(key)
	sealed, err = sealStageWith(name, key, plain)
	if err != nil {
		return nil, nil, err
	}
	return key, sealed, nil
}

// sealStageWith encrypts plain under key with a fresh random nonce, bound
// to name.
func sealStageWith(name string, key, plain []byte) ([]byte, error) {
	aead, err := stageAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, plain, []byte(name)), nil
}

// OpenStage decrypts what SealStage sealed under name; any change to the
// bytes, the key or the name is an error wrapping ErrStageInvalid.
func OpenStage(name string, key, sealed []byte) ([]byte, error) {
	aead, err := stageAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < StageOverhead {
		return nil, fmt.Errorf("%w: %s: %d bytes, too short", ErrStageInvalid, name, len(sealed))
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: does not decrypt under its key", ErrStageInvalid, name)
	}
	return plain, nil
}

func stageAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != StageKeySize {
		return nil, fmt.Errorf("%w: key of %d bytes, want %d", ErrStageInvalid, len(key), StageKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("protocol: stage: %w", err)
	}
	return cipher.NewGCM(block)
}

// PutStaged encrypts plain and stores it in obs under a fresh delivery name
// (DeliverStageName); the hub stages a large delivery with it, in the
// StageBucket store. Put the returned name and key in the message's
// Container (Staged, StageKey).
func PutStaged(ctx context.Context, obs jetstream.ObjectStore, plain []byte) (name string, key []byte, err error) {
	name = DeliverStageName()
	key, sealed, err := SealStage(name, plain)
	if err != nil {
		return "", nil, err
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(sealed)); err != nil {
		return "", nil, fmt.Errorf("protocol: stage %s: %w", name, err)
	}
	return name, key, nil
}

// RestageDelivery stores plain again in obs under the name and key a
// delivery already carries (a fresh nonce, the same key), for a delivery
// whose staged object went missing: the hub takes the container from its
// archive, and the recipient's next attempt reads it with the key it has.
func RestageDelivery(ctx context.Context, obs jetstream.ObjectStore, name string, key, plain []byte) error {
	if err := validStageName(name, deliverStagePrefix); err != nil {
		return fmt.Errorf("protocol: restage %q: %w", name, err)
	}
	sealed, err := sealStageWith(name, key, plain)
	if err != nil {
		return err
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(sealed)); err != nil {
		return fmt.Errorf("protocol: restage %s: %w", name, err)
	}
	return nil
}

// UploadStaged encrypts plain and uploads it to UploadBucket under a fresh
// submission name (SubmitStageName); a unit stages a large submission with
// it, over the js that ConnectUnit returned. Units may only write to that
// store (they can neither read nor list it, nor roll it up), so the object is
// written the way the object store lays it out (chunks, then the meta
// message) with plain publishes rather than through an ObjectStore handle,
// which would need read access. The hub reads it with GetStaged.
func UploadStaged(ctx context.Context, js jetstream.JetStream, plain []byte) (name string, key []byte, err error) {
	name = SubmitStageName()
	key, sealed, err := SealStage(name, plain)
	if err != nil {
		return "", nil, err
	}
	id := make([]byte, stageNameBytes)
	rand.Read(id)
	nuid := hex.EncodeToString(id)
	chunkSubj := "$O." + UploadBucket + ".C." + nuid
	h := sha256.New()
	var inflight []jetstream.PubAckFuture
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	chunks := 0
	for off := 0; off < len(sealed); off += stageChunkSize {
		b := sealed[off:min(off+stageChunkSize, len(sealed))]
		h.Write(b)
		if len(inflight) == uploadWindow {
			if err := wait(inflight[0]); err != nil {
				return "", nil, fmt.Errorf("protocol: upload %s: %w", name, err)
			}
			inflight = inflight[1:]
		}
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: chunkSubj, Data: b})
		if err != nil {
			return "", nil, fmt.Errorf("protocol: upload %s: %w", name, err)
		}
		inflight = append(inflight, f)
		chunks++
	}
	for _, f := range inflight {
		if err := wait(f); err != nil {
			return "", nil, fmt.Errorf("protocol: upload %s: %w", name, err)
		}
	}
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: stageChunkSize}},
		Bucket:     UploadBucket,
		NUID:       nuid,
		Size:       uint64(len(sealed)),
		Chunks:     uint32(chunks),
		Digest:     "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil)),
	}
	meta, err := json.Marshal(info)
	if err != nil {
		return "", nil, fmt.Errorf("protocol: upload %s: %w", name, err)
	}
	m := &nats.Msg{Subject: "$O." + UploadBucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)), Data: meta}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return "", nil, fmt.Errorf("protocol: upload %s: %w", name, err)
	}
	return name, key, nil
}

// GetStaged reads the staged object name from obs and decrypts it with key.
// maxSize bounds the plaintext. A missing, malformed, oversized or
// undecryptable object is an error wrapping ErrStageInvalid; any other error
// (the server unreachable, ctx done) is worth a retry.
//
// A reader of objects that others wrote (the hub reading uploads) must also
// make sure the object's chunks are there, or bound ctx: an object whose
// meta names chunks that were never written makes the read wait for them.
func GetStaged(ctx context.Context, obs jetstream.ObjectStore, name string, key []byte, maxSize int64) ([]byte, error) {
	if len(key) != StageKeySize {
		return nil, fmt.Errorf("%w: %s: key of %d bytes, want %d", ErrStageInvalid, name, len(key), StageKeySize)
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, stageGetErr(name, err)
	}
	switch {
	case info.Opts != nil && info.Opts.Link != nil:
		return nil, fmt.Errorf("%w: %s is a link", ErrStageInvalid, name)
	case info.Size > uint64(maxSize)+StageOverhead:
		return nil, fmt.Errorf("%w: %s: %d bytes, above the limit of %d", ErrStageInvalid, name, info.Size, maxSize)
	case info.Size < StageOverhead || info.Chunks == 0:
		return nil, fmt.Errorf("%w: %s: %d bytes in %d chunks", ErrStageInvalid, name, info.Size, info.Chunks)
	}
	r, err := obs.Get(ctx, name)
	if err != nil {
		return nil, stageGetErr(name, err)
	}
	defer r.Close()
	sealed, err := io.ReadAll(io.LimitReader(r, int64(info.Size)+1))
	if err != nil {
		return nil, stageGetErr(name, err)
	}
	if uint64(len(sealed)) != info.Size {
		return nil, fmt.Errorf("%w: %s: read %d bytes, its meta says %d", ErrStageInvalid, name, len(sealed), info.Size)
	}
	return OpenStage(name, key, sealed)
}

func stageGetErr(name string, err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax), errors.As(err, &typ):
		return fmt.Errorf("%w: %s: meta: %v", ErrStageInvalid, name, err)
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return fmt.Errorf("%w: %s not found (expired or never stored)", ErrStageInvalid, name)
	case errors.Is(err, jetstream.ErrBadObjectMeta), errors.Is(err, jetstream.ErrDigestMismatch):
		return fmt.Errorf("%w: %s: %v", ErrStageInvalid, name, err)
	}
	return fmt.Errorf("protocol: get staged %s: %w", name, err)
}
