package hub

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Readiness and recovery from storage failures (a full disk).
//
// /readyz writes, for real, to everything the pipeline writes to: a message
// to JetStream (the health stream), a part of an aborted multipart upload to
// S3, a transaction to the index; and, with the embedded NATS server, asks
// JetStream's own health check. Any failure makes the hub not ready, with
// the reason.
//
// Recovery is automatic. The archive and the index recover by themselves
// once the disk has room: every failed write is retried with the message
// (naked, redelivered). JetStream does not: a stream whose write failed
// keeps the error and refuses every later write until the server restarts.
// So, every healthEvery, while the embedded server's health check fails
// and a test write to its store directory succeeds (the disk has room
// again), the hub restarts the embedded server in-process, at most once per
// restartEvery. Clients, the hub's and the agents', reconnect by
// themselves; nothing unacknowledged is lost. An external NATS cluster
// recovers on its own (a replica that fails a write steps down).

const (
	healthEvery  = 5 * time.Second
	restartEvery = 30 * time.Second
	readyFor     = time.Second // how long a readiness answer is reused
	// healthStream holds the JetStream write check: one tiny message per
	// hub process, for an hour. Like every stream it is bounded (JetStream
	// reserves its max_bytes beside the edx streams', broker.StreamOptions);
	// unlike them it drops its oldest messages when full, since none is
	// worth keeping.
	healthStream   = "EDX_HEALTH"
	healthSubject  = "edx.health."
	healthMaxBytes = 1 << 20
	healthMaxMsgs  = 1000
	healthMsgSize  = 1 << 10
)

// health caches the readiness checks and runs the recovery.
type health struct {
	mu      sync.Mutex
	at      time.Time
	last    map[string]error
	subject string
}

// ensureHealthStream creates the stream of the JetStream write check.
func ensureHealthStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              healthStream,
		Description:       "edx hub readiness: a JetStream write check",
		Subjects:          []string{healthSubject + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          max(replicas, 1),
		MaxMsgsPerSubject: 1,
		MaxAge:            time.Hour,
		MaxBytes:          healthMaxBytes,
		MaxMsgs:           healthMaxMsgs,
		MaxMsgSize:        healthMsgSize,
		Duplicates:        time.Minute,
		Discard:           jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("nats: ensure stream %s: %w (every stream reserves its max_bytes: lower nats.streams.*_max_bytes or give JetStream more room)", healthStream, err)
	}
	return nil
}

// ready is /readyz's checks by name: the dependencies' (dependencies), the
// CRLs' ("crl": one in force is stale, and documents under its issuer are
// held), the index's ("events": catching up with progress, or behind the
// decision events) and the transparency log's ("log": its journal stopped
// after a failed sync, until a restart).
func (h *Hub) ready(ctx context.Context) map[string]error {
	checks := maps.Clone(h.dependencies(ctx))
	checks["crl"] = h.crl.ready(ctx)
	checks["events"] = h.follow.Check()
	if h.tlog != nil {
		checks["log"] = h.tlog.Check()
	}
	return checks
}

// dependencies runs the write checks, or returns the answer of the last
// second.
func (h *Hub) dependencies(ctx context.Context) map[string]error {
	h.health.mu.Lock()
	defer h.health.mu.Unlock()
	if h.health.last != nil && time.Since(h.health.at) < readyFor {
		return h.health.last
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var natsErr, archErr, ixErr error
	wg.Go(func() { natsErr = h.natsWritable(ctx) })
	wg.Go(func() { archErr = h.arch.ProbeWrite(ctx) })
	wg.Go(func() { ixErr = h.ix.CheckWrite(ctx) })
	wg.Wait()
	h.health.last = map[string]error{"nats": natsErr, "archive": archErr, "index": ixErr}
	h.health.at = time.Now()
	return h.health.last
}

// natsWritable checks the connection, JetStream's health (embedded) and a
// write to the health stream.
func (h *Hub) natsWritable(ctx context.Context) error {
	if !h.nc.IsConnected() {
		return errors.New("not connected")
	}
	if h.nats != nil {
		if err := h.nats.Health(); err != nil {
			return err
		}
	}
	if h.health.subject == "" {
		h.health.subject = healthSubject + rand.Text()[:12]
	}
	if _, err := h.js.Publish(ctx, h.health.subject, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("write check: %w", err)
	}
	return nil
}

// recover restarts the embedded NATS server when JetStream holds a write
// error and its disk has room again, until ctx is done.
func (h *Hub) recover(ctx context.Context) {
	if h.nats == nil {
		return
	}
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	var restarted time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := h.nats.Health()
		if err == nil || time.Since(restarted) < restartEvery {
			continue
		}
		if werr := writable(h.cfg.NATS.Embedded.StoreDir); werr != nil {
			h.log.Warn("jetstream cannot store, and its disk is still full", "err", err, "check", werr)
			continue
		}
		h.log.Warn("jetstream cannot store although its disk has room again: restarting the embedded NATS server", "err", err)
		restarted = time.Now()
		if err := h.nats.Restart(ctx); err != nil {
			h.log.Error("nats: restart", "err", err)
		}
	}
}

// writable writes and removes 1 MiB in dir, synced to disk.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".edx-space-check-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 1<<20))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(f.Name()), err)
	}
	return nil
}
