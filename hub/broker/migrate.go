package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// An earlier version kept deliveries in EDX_DELIVER and notices in
// EDX_NOTICE, both with interest retention, and gave every unit a consumer
// on each. migrateUnitStreams moves what they hold into the one
// EDX_DELIVER of limits retention (StreamConfigs), message by message,
// nothing lost and nothing left behind:
//
//  1. the old streams stop taking messages (their subjects are retired):
//     a hub still publishing to them gets no answer and retries, until the
//     new stream takes the subjects;
//  2. every message they hold (what some unit has not acknowledged yet;
//     what units acknowledged is gone already) is copied, deliveries
//     first, into a holding stream, EDX_MIGRATE;
//  3. the old streams and their consumers are deleted;
//  4. the new EDX_DELIVER is created, and the held messages are copied
//     into it with their headers as they were, a delivery on its subject,
//     a notice on its unit's one subject too, marked as a notice
//     (protocol.HeaderKind);
//  5. EDX_MIGRATE is deleted. The hub then gives each unit its one
//     consumer (EnsureUnitConsumers), which delivers what was held.
//
// A crash anywhere is resumed from what the streams show at the next
// start: copies carry a Nats-Msg-Id, so a copy made again is dropped. A
// message a unit's agent had received but not acknowledged before is
// delivered again; the agent hands each document over once.
const (
	// migrateStream holds the messages between the old streams and the
	// new one.
	migrateStream = "EDX_MIGRATE"
	migratePrefix = "edx.migrate."
	// retiredPrefix is where the old streams' subjects go once retired.
	retiredPrefix = "edx.retired."
	// Headers on the held copies: where each came from, and the
	// Nats-Msg-Id it had (given back in the new stream).
	headerMigratedFrom  = "Edx-Migrated-From"
	headerMigratedMsgID = "Edx-Migrated-Msg-Id"
)

// Migration says what migrateUnitStreams did.
type Migration struct {
	Held   int // messages copied out of the old streams
	Copied int // messages copied into the new EDX_DELIVER
}

// migrateHook, for tests, runs after each named step; an error stops the
// migration there, as a crash would.
var migrateHook func(step string) error

func migrateStep(step string) error {
	if migrateHook != nil {
		return migrateHook(step)
	}
	return nil
}

// MigrateUnitStreams moves an earlier version's EDX_DELIVER and EDX_NOTICE
// into the EDX_DELIVER of opts, or finishes a move a crash interrupted; with
// nothing to move it only looks. EnsureStreams calls it first.
func MigrateUnitStreams(ctx context.Context, js jetstream.JetStream, opts StreamOptions) (Migration, error) {
	opts.SetDefaults()
	streams, _ := StreamConfigs(opts)
	return migrateUnitStreams(ctx, js, streams[1], opts.Duplicates)
}

func migrateUnitStreams(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, dup time.Duration) (Migration, error) {
	var res Migration
	var old []jetstream.Stream // deliveries first
	var held int64
	for _, name := range []string{protocol.StreamDeliver, protocol.LegacyStreamNotice} {
		st, err := js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			continue
		case err != nil:
			return res, fmt.Errorf("broker: migrate: %s: %w", name, err)
		}
		if name == protocol.StreamDeliver && st.CachedInfo().Config.Retention == jetstream.LimitsPolicy {
			continue // the new one
		}
		old = append(old, st)
		held += int64(st.CachedInfo().State.Bytes)
	}
	if len(old) > 0 {
		for _, st := range old {
			if err := retire(ctx, js, st); err != nil {
				return res, err
			}
		}
		if err := migrateStep("retired"); err != nil {
			return res, err
		}
		_, err := js.Stream(ctx, migrateStream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{
				Name:        migrateStream,
				Description: "edx: deliveries and notices on their way from EDX_DELIVER and EDX_NOTICE of an earlier version to the new EDX_DELIVER",
				Subjects:    []string{migratePrefix + ">"},
				Storage:     jetstream.FileStorage,
				Replicas:    want.Replicas,
				// What the old streams hold, with room for the added
				// headers: reserved for as long as the move lasts.
				MaxBytes:   held + held/8 + 1<<20,
				MaxMsgSize: want.MaxMsgSize + 4<<10,
				Duplicates: dup,
				Discard:    jetstream.DiscardNew,
			})
		}
		if err != nil {
			return res, fmt.Errorf("broker: migrate: holding stream %s (it reserves what the old streams hold, %d MiB): %w", migrateStream, held>>20+1, err)
		}
		for _, st := range old {
			n, err := copyStream(ctx, js, st, func(m *jetstream.RawStreamMsg) *nats.Msg {
				c := nats.NewMsg(migratePrefix + m.Subject)
				for k, v := range m.Header {
					c.Header[k] = v
				}
				c.Header.Del(nats.MsgIdHdr)
				if id := m.Header.Get(nats.MsgIdHdr); id != "" {
					c.Header.Set(headerMigratedMsgID, id)
				}
				from := st.CachedInfo().Config.Name + "." + strconv.FormatUint(m.Sequence, 10)
				c.Header.Set(headerMigratedFrom, from)
				c.Header.Set(nats.MsgIdHdr, "migrate."+from)
				c.Data = m.Data
				return c
			})
			res.Held += n
			if err != nil {
				return res, err
			}
			if err := migrateStep("held " + st.CachedInfo().Config.Name); err != nil {
				return res, err
			}
		}
		for _, st := range old {
			name := st.CachedInfo().Config.Name
			if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return res, fmt.Errorf("broker: migrate: delete %s: %w", name, err)
			}
		}
		if err := migrateStep("deleted"); err != nil {
			return res, err
		}
	}
	hold, err := js.Stream(ctx, migrateStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return res, nil
	case err != nil:
		return res, fmt.Errorf("broker: migrate: %s: %w", migrateStream, err)
	}
	if _, err := js.Stream(ctx, want.Name); errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return res, fmt.Errorf("broker: migrate: create %s: %w", want.Name, err)
		}
	} else if err != nil {
		return res, fmt.Errorf("broker: migrate: %s: %w", want.Name, err)
	}
	if err := migrateStep("created"); err != nil {
		return res, err
	}
	n, err := copyStream(ctx, js, hold, func(m *jetstream.RawStreamMsg) *nats.Msg {
		subject := strings.TrimPrefix(m.Subject, migratePrefix)
		c := nats.NewMsg(subject)
		for k, v := range m.Header {
			c.Header[k] = v
		}
		if unit, ok := strings.CutPrefix(subject, protocol.LegacySubjectNoticePrefix); ok {
			// A notice: on its unit's one subject, marked as one.
			c.Subject = protocol.DeliverSubject(unit)
			c.Header.Set(protocol.HeaderKind, protocol.KindNotice)
		}
		c.Header.Del(nats.MsgIdHdr)
		c.Header.Del(headerMigratedFrom)
		c.Header.Del(headerMigratedMsgID)
		if id := m.Header.Get(headerMigratedMsgID); id != "" {
			c.Header.Set(nats.MsgIdHdr, id)
		}
		c.Data = m.Data
		return c
	})
	res.Copied = n
	if err != nil {
		return res, err
	}
	if err := migrateStep("copied"); err != nil {
		return res, err
	}
	if err := js.DeleteStream(ctx, migrateStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return res, fmt.Errorf("broker: migrate: delete %s: %w", migrateStream, err)
	}
	return res, nil
}

// retire points an old stream's subjects where nothing publishes, so that
// it takes nothing more while its messages are copied out.
func retire(ctx context.Context, js jetstream.JetStream, st jetstream.Stream) error {
	cfg := st.CachedInfo().Config
	var subjects []string
	for _, s := range cfg.Subjects {
		if !strings.HasPrefix(s, retiredPrefix) {
			s = retiredPrefix + s
		}
		subjects = append(subjects, s)
	}
	if strings.Join(subjects, ",") == strings.Join(cfg.Subjects, ",") {
		return nil
	}
	cfg.Subjects = subjects
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("broker: migrate: retire %s: %w", cfg.Name, err)
	}
	return nil
}

// copyStream publishes what from holds, in order, as conv makes it, and
// waits until the target stream has every copy.
func copyStream(ctx context.Context, js jetstream.JetStream, from jetstream.Stream, conv func(*jetstream.RawStreamMsg) *nats.Msg) (int, error) {
	name := from.CachedInfo().Config.Name
	var futs []jetstream.PubAckFuture
	var bytes int
	wait := func() error {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("broker: migrate: copy from %s: %w", name, err)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Minute):
				return fmt.Errorf("broker: migrate: copy from %s: no acknowledgement", name)
			}
		}
		futs, bytes = futs[:0], 0
		return nil
	}
	n := 0
	for seq := uint64(1); ; {
		m, err := from.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // past the last one
		}
		if err != nil {
			return n, fmt.Errorf("broker: migrate: read %s at %d: %w", name, seq, err)
		}
		c := conv(m)
		f, err := js.PublishMsgAsync(c)
		if err != nil {
			return n, fmt.Errorf("broker: migrate: copy from %s: %w", name, err)
		}
		futs = append(futs, f)
		n++
		// A bounded window: the server refuses more than its ingest
		// queue holds.
		if bytes += len(c.Data); bytes > 32<<20 || len(futs) >= 1000 {
			if err := wait(); err != nil {
				return n, err
			}
		}
		seq = m.Sequence + 1
	}
	return n, wait()
}
