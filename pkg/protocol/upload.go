package protocol

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
)

// Uploads. A unit stages a submission above InlineLimit in StreamUpload, on
// its own subject (UploadSubject): the container sealed under a fresh name
// and key (SealStage), cut into chunks of UploadChunkSize, each a message
// with the object's name and its index in headers. The submission names the
// object, its key and the stream sequence of its first chunk.
//
// One subject per unit lets the server bound each unit's share of the
// stream (a maximum of messages per subject, and of bytes per message: the
// broker's upload_unit_quota), which an object store, whose chunk subjects
// carry a random name per object, cannot. The hub reads an upload by
// sequence with direct gets (GetUpload) and removes its chunks once it has
// processed the submission (ReleaseUpload), freeing the unit's quota.
const (
	// UploadChunkSize is the size of every chunk but the last.
	UploadChunkSize = 128 << 10
	// MaxUploadMsgSize bounds a chunk message: a chunk and its headers.
	MaxUploadMsgSize = UploadChunkSize + 1<<10
	// maxUploadSkip bounds how many chunks of the unit's other uploads
	// GetUpload passes over while it looks for one upload's chunks.
	maxUploadSkip = 1 << 14
	uploadWindow  = 64 // chunks in flight in UploadStaged
)

// Headers of an upload chunk.
const (
	HeaderUpload     = "Edx-Upload"      // the staged object's name
	HeaderChunk      = "Edx-Chunk"       // the chunk's index, from 0
	HeaderUploadSize = "Edx-Upload-Size" // on chunk 0: the sealed object's size, so that its chunks can be counted
)

// UploadStaged stages the container c.Data for a submission: it seals it
// under a fresh submission name (SubmitStageName) and key and publishes it,
// in chunks, on unit's upload subject, over the js that ConnectUnit
// returned; then it sets c's Staged, StageKey and StagedSeq and clears
// c.Data, so that SubmitMsg(unit, c) names the upload. The server refuses a
// chunk once the unit's quota is full: the error says so ("maximum messages
// per subject exceeded"), and the agent retries later.
func UploadStaged(ctx context.Context, js jetstream.JetStream, unit document.UnitID, c *Container) error {
	name := SubmitStageName()
	key, sealed, err := SealStage(name, c.Data)
	if err != nil {
		return err
	}
	subj := UploadSubject(string(unit))
	wait := func(f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
		select {
		case ack := <-f.Ok():
			return ack, nil
		case err := <-f.Err():
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var seq uint64 // the first chunk's
	var inflight []jetstream.PubAckFuture
	for i, off := 0, 0; off < len(sealed); i, off = i+1, off+UploadChunkSize {
		if len(inflight) == uploadWindow {
			if _, err := wait(inflight[0]); err != nil {
				return fmt.Errorf("protocol: upload %s: %w", name, err)
			}
			inflight = inflight[1:]
		}
		m := nats.NewMsg(subj)
		m.Header.Set(HeaderUpload, name)
		m.Header.Set(HeaderChunk, strconv.Itoa(i))
		if i == 0 {
			m.Header.Set(HeaderUploadSize, strconv.Itoa(len(sealed)))
		}
		m.Data = sealed[off:min(off+UploadChunkSize, len(sealed))]
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("protocol: upload %s: %w", name, err)
		}
		if i == 0 {
			// Its sequence names the upload; and a unit whose quota is
			// full learns it before sending more.
			ack, err := wait(f)
			if err != nil {
				return fmt.Errorf("protocol: upload %s: %w", name, err)
			}
			seq = ack.Sequence
			continue
		}
		inflight = append(inflight, f)
	}
	for _, f := range inflight {
		if _, err := wait(f); err != nil {
			return fmt.Errorf("protocol: upload %s: %w", name, err)
		}
	}
	c.Staged, c.StageKey, c.StagedSeq, c.Data = name, key, seq, nil
	return nil
}

// GetUpload reads the staged submission c of unit (c.Staged, c.StageKey,
// c.StagedSeq, c.Size) from the upload stream st, over the hub's connection,
// and decrypts it. maxSize bounds the plaintext. It returns the sequences of
// the chunks it read, for ReleaseUpload. Missing, misplaced, oversized or
// undecryptable chunks are an error wrapping ErrStageInvalid; any other
// error (the server unreachable, ctx done) is worth a retry.
//
// Only the unit's own subject is read, from the first chunk's sequence on;
// chunks of the unit's other uploads in between are passed over (at most
// the unit's quota of them).
func GetUpload(ctx context.Context, st jetstream.Stream, unit document.UnitID, c *Container, maxSize int64) ([]byte, []uint64, error) {
	name := c.Staged
	switch {
	case validStageName(name, submitStagePrefix) != nil:
		return nil, nil, fmt.Errorf("%w: %q is not an upload name", ErrStageInvalid, name)
	case len(c.StageKey) != StageKeySize:
		return nil, nil, fmt.Errorf("%w: %s: key of %d bytes, want %d", ErrStageInvalid, name, len(c.StageKey), StageKeySize)
	case c.Size <= 0 || c.Size > maxSize:
		return nil, nil, fmt.Errorf("%w: %s: %d bytes, above the limit of %d", ErrStageInvalid, name, c.Size, maxSize)
	case c.StagedSeq == 0:
		return nil, nil, fmt.Errorf("%w: %s: no first sequence", ErrStageInvalid, name)
	}
	size := c.Size + StageOverhead
	n := int((size + UploadChunkSize - 1) / UploadChunkSize)
	subj := UploadSubject(string(unit))
	sealed := make([]byte, 0, size)
	seqs := make([]uint64, 0, n)
	for seq, skipped := c.StagedSeq, 0; len(seqs) < n; seq++ {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil, nil, fmt.Errorf("%w: %s: %d of %d chunks found (expired, or never uploaded)", ErrStageInvalid, name, len(seqs), n)
		case err != nil:
			return nil, nil, fmt.Errorf("protocol: get upload %s: %w", name, err)
		}
		seq = m.Sequence
		if m.Header.Get(HeaderUpload) != name {
			if skipped++; skipped > maxUploadSkip {
				return nil, nil, fmt.Errorf("%w: %s: %d of %d chunks found", ErrStageInvalid, name, len(seqs), n)
			}
			continue
		}
		want := UploadChunkSize
		if len(seqs) == n-1 {
			want = int(size) - (n-1)*UploadChunkSize
		}
		if i, err := strconv.Atoi(m.Header.Get(HeaderChunk)); err != nil || i != len(seqs) || len(m.Data) != want {
			return nil, nil, fmt.Errorf("%w: %s: chunk %d out of place (index %q, %d bytes)", ErrStageInvalid, name, len(seqs), m.Header.Get(HeaderChunk), len(m.Data))
		}
		sealed = append(sealed, m.Data...)
		seqs = append(seqs, seq)
	}
	plain, err := OpenStage(name, c.StageKey, sealed)
	if err != nil {
		return nil, nil, err
	}
	return plain, seqs, nil
}

// ReleaseUpload removes an upload's chunks (GetUpload's sequences) from the
// upload stream, freeing the unit's quota. Chunks already gone are fine.
func ReleaseUpload(ctx context.Context, st jetstream.Stream, seqs []uint64) error {
	for _, seq := range seqs {
		err := st.DeleteMsg(ctx, seq)
		if err != nil && !(errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) && strings.Contains(err.Error(), "no message found")) {
			return fmt.Errorf("protocol: release upload chunk %d: %w", seq, err)
		}
	}
	return nil
}

// Upload is one upload in the upload stream, as ListUploads sees it.
type Upload struct {
	Name     string
	Seqs     []uint64  // its chunks' sequences
	Complete bool      // every chunk is there
	Last     time.Time // when its latest chunk was stored
}

// ListUploads lists unit's uploads in the upload stream, reading the
// chunks' headers only, over the hub's js (EDX). The hub removes with it
// what no submission can use any more: incomplete uploads (a unit that
// stopped half way, or ran into its quota) and uploads no submission names.
func ListUploads(ctx context.Context, js jetstream.JetStream, unit document.UnitID) ([]Upload, error) {
	cons, err := js.OrderedConsumer(ctx, StreamUpload, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{UploadSubject(string(unit))},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		HeadersOnly:    true,
		// Each Fetch makes the consumer anew, by default retrying without
		// end while JetStream does not answer (see hub/pipeline's
		// stagedRefs): a few attempts, then an error.
		MaxResetAttempts: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("protocol: list uploads of %s: %w", unit, err)
	}
	byName := map[string]*Upload{}
	var order []string
	want := map[string]int{}
	for more := true; more; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("protocol: list uploads of %s: %w", unit, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			more = md.NumPending > 0
			name := m.Headers().Get(HeaderUpload)
			u := byName[name]
			if u == nil {
				u = &Upload{Name: name}
				byName[name] = u
				order = append(order, name)
			}
			u.Seqs = append(u.Seqs, md.Sequence.Stream)
			u.Last = md.Timestamp
			if size, err := strconv.Atoi(m.Headers().Get(HeaderUploadSize)); err == nil && size > 0 && m.Headers().Get(HeaderChunk) == "0" {
				want[name] = (size + UploadChunkSize - 1) / UploadChunkSize
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("protocol: list uploads of %s: %w", unit, err)
		}
		if n == 0 {
			break
		}
	}
	out := make([]Upload, 0, len(order))
	for _, name := range order {
		u := byName[name]
		u.Complete = want[name] > 0 && len(u.Seqs) == want[name]
		out = append(out, *u)
	}
	return out, nil
}
