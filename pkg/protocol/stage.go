package protocol

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
)

// Staging. A container above InlineLimit travels beside its message: a
// sender's submission in the upload stream StreamUpload (EDX account, units
// may only write there, each on its own subject: see UploadStaged), a
// delivery in the object store StageBucket (STAGE account, the hub writes,
// units read through the hub's stage service). Every staged object is
// encrypted with AES-256-GCM under a fresh random key that travels only in
// the message naming the object, and its name is random: a unit that reads
// a store it shares with others sees ciphertext under names it cannot link
// to anything.
// Only the message's reader (the hub for submissions, the recipient's
// consumer for deliveries) holds the key. The container's SHA-256 in the
// message still binds the plaintext.
//
// Sealed layout: a 12-byte random nonce, then the GCM ciphertext and tag; the
// object name is the additional data, so an object cannot be passed off under
// another name.
//
// A staged submission lives in the upload stream until the hub has
// processed its submission (at most the stream's max age, stage_ttl; the hub
// sweeps uploads no submission can use). A staged delivery has no TTL: the
// hub keeps it while a delivery waiting for its unit names it, and stages it
// again from the archive when it went missing (hub/pipeline, stage.go).

// StageKeySize is the size of a staged object's AES-256 key.
const StageKeySize = 32

// StageOverhead is how much larger a sealed object is than its plaintext.
const StageOverhead = 12 + 16

const (
	submitStagePrefix  = "s/"
	deliverStagePrefix = "d/"
	stageNameBytes     = 16 // random bytes in a name: 128 bits, hex
)

// ErrStageInvalid marks a staged object that is missing (removed, expired,
// or never stored), malformed, too large, or does not decrypt under its
// key, unlike an unreachable server. For a submission it is final: the hub rejects it.
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

// The stage store's reading side. Units cannot read the stage store's
// stream themselves (no stream info, no direct get, no consumer of their
// own): a permission on a subject with a wildcard token also admits a
// literal "*" there, which would list or read every unit's objects, and a
// consumer a unit creates may be durable and may be anyone's. Instead a unit
// asks the hub's stage service (StageSubject) to open one staged object in
// one of its StageSlots; the hub looks the object up and (re)creates the
// unit's pull consumer of that slot (StageConsumer), filtered on that
// object's chunks; the unit pulls from it and deletes it, and may touch no
// other consumer. So a unit holds at most StageSlots consumers, learns
// nothing of objects it cannot name, and reads only the chunks of the object
// it named (ciphertext, until it applies the key from its delivery).

// StageStream is the stream behind the stage store.
const StageStream = "OBJ_" + StageBucket

// StageSlots is how many staged objects one unit reads at once: one pull
// consumer on the stage store per slot.
const StageSlots = 2

// StageConsumer names the unit's consumer of slot on the stage store.
func StageConsumer(unit string, slot int) string {
	return "stage_" + consumerSafe(unit) + "_" + strconv.Itoa(slot)
}

// StageRequest asks the hub's stage service to open a staged delivery.
type StageRequest struct {
	Name string `json:"name"`
	Slot int    `json:"slot"`
}

// StageReply answers a StageRequest: the consumer to pull the object's
// chunks from, in order, and the object's sealed size; or that there is no
// such object; or an error worth a retry.
type StageReply struct {
	Consumer string `json:"consumer,omitempty"`
	Size     uint64 `json:"size,omitempty"`
	Chunks   uint32 `json:"chunks,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ParseStageRequest reads a stage request; the unit comes from the subject.
func ParseStageRequest(m *nats.Msg) (document.UnitID, *StageRequest, error) {
	unit := document.UnitID(UnitFromSubject(m.Subject))
	if !strings.HasPrefix(m.Subject, SubjectStagePrefix) {
		return unit, nil, fmt.Errorf("protocol: subject %q is not a stage request", m.Subject)
	}
	var r StageRequest
	if len(m.Data) > 1<<10 {
		return unit, nil, errors.New("protocol: stage request: too large")
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return unit, nil, fmt.Errorf("protocol: stage request: %w", err)
	}
	if err := validStageName(r.Name, deliverStagePrefix); err != nil {
		return unit, nil, fmt.Errorf("protocol: stage request: name: %w", err)
	}
	if r.Slot < 0 || r.Slot >= StageSlots {
		return unit, nil, fmt.Errorf("protocol: stage request: slot %d not in 0..%d", r.Slot, StageSlots-1)
	}
	return unit, &r, nil
}

// Stage is a unit's access to the stage store (ConnectUnit returns it):
// read a staged delivery with GetStaged.
type Stage struct {
	nc    *nats.Conn
	js    jetstream.JetStream // STAGE, under StageAPIPrefix
	unit  document.UnitID
	slots chan int
}

func newStage(nc *nats.Conn, js jetstream.JetStream, unit document.UnitID) *Stage {
	s := &Stage{nc: nc, js: js, unit: unit, slots: make(chan int, StageSlots)}
	// Another process of the same unit most likely starts with another
	// slot.
	first := int(time.Now().UnixNano() % StageSlots)
	for i := range StageSlots {
		s.slots <- (first + i) % StageSlots
	}
	return s
}

// GetStaged reads the staged delivery name through the hub's stage service
// and decrypts it with key. maxSize bounds the plaintext. A missing,
// malformed, oversized or undecryptable object is an error wrapping
// ErrStageInvalid; any other error (the hub or the server unreachable, ctx
// done, a chunk lost on the way) is worth a retry.
func GetStaged(ctx context.Context, s *Stage, name string, key []byte, maxSize int64) ([]byte, error) {
	if len(key) != StageKeySize {
		return nil, fmt.Errorf("%w: %s: key of %d bytes, want %d", ErrStageInvalid, name, len(key), StageKeySize)
	}
	if err := validStageName(name, deliverStagePrefix); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStageInvalid, name, err)
	}
	var slot int
	select {
	case slot = <-s.slots:
		defer func() { s.slots <- slot }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	body, _ := json.Marshal(StageRequest{Name: name, Slot: slot})
	m, err := s.nc.RequestWithContext(ctx, StageSubject(string(s.unit)), body)
	if err != nil {
		return nil, fmt.Errorf("protocol: get staged %s: the hub's stage service: %w", name, err)
	}
	var r StageReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("protocol: get staged %s: the hub's stage service: %w", name, err)
	}
	if r.Consumer != "" && r.Consumer == StageConsumer(string(s.unit), slot) {
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.js.DeleteConsumer(dctx, StageStream, r.Consumer) // else it expires when idle
			cancel()
		}()
	}
	switch {
	case r.NotFound:
		return nil, fmt.Errorf("%w: %s is not in the stage store (the hub stages a missing delivery again from its archive)", ErrStageInvalid, name)
	case r.Error != "":
		return nil, fmt.Errorf("protocol: get staged %s: the hub's stage service: %s", name, r.Error)
	case r.Consumer != StageConsumer(string(s.unit), slot):
		return nil, fmt.Errorf("protocol: get staged %s: the hub's stage service named consumer %q", name, r.Consumer)
	case r.Size > uint64(maxSize)+StageOverhead:
		return nil, fmt.Errorf("%w: %s: %d bytes, above the limit of %d", ErrStageInvalid, name, r.Size, maxSize)
	case r.Size < StageOverhead || r.Chunks == 0 || uint64(r.Chunks) > r.Size:
		return nil, fmt.Errorf("%w: %s: %d bytes in %d chunks", ErrStageInvalid, name, r.Size, r.Chunks)
	}
	cons, err := s.js.Consumer(ctx, StageStream, r.Consumer)
	if err != nil {
		return nil, fmt.Errorf("protocol: get staged %s: %w", name, err)
	}
	sealed := make([]byte, 0, r.Size)
	for got := 0; got < int(r.Chunks); {
		wait := 10 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = max(min(wait, time.Until(dl)), time.Second)
		}
		batch, err := cons.Fetch(min(int(r.Chunks)-got, 64), jetstream.FetchMaxWait(wait))
		if err != nil {
			return nil, fmt.Errorf("protocol: get staged %s: %w", name, err)
		}
		n := 0
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			if err != nil || md.Sequence.Consumer != uint64(got+1) {
				return nil, fmt.Errorf("protocol: get staged %s: chunk %d lost on the way", name, got)
			}
			if uint64(len(sealed)+len(msg.Data())) > r.Size {
				return nil, fmt.Errorf("%w: %s: more than its %d bytes", ErrStageInvalid, name, r.Size)
			}
			sealed = append(sealed, msg.Data()...)
			got++
			n++
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("protocol: get staged %s: %w", name, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("protocol: get staged %s: no chunk after %d of %d", name, got, r.Chunks)
		}
	}
	if uint64(len(sealed)) != r.Size {
		return nil, fmt.Errorf("%w: %s: read %d bytes, its meta says %d", ErrStageInvalid, name, len(sealed), r.Size)
	}
	return OpenStage(name, key, sealed)
}
