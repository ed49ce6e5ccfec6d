package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// The stage store keeps no TTL: a staged delivery must outlive every
// delivery that names it, however long its recipient stays offline. The
// deliveries themselves are the record of what is still needed: a delivery
// leaves EDX_DELIVER once its recipient's agent acknowledged it (the hub
// removes it then, broker.Trimmer), and what remains is what some agent has
// yet to fetch, or fetched moments ago. Every StageSweep the hub reads the
// headers of the deliveries still waiting and compares them with the store:
//
//   - an object no waiting delivery names, older than StageGrace, is deleted
//     (younger ones are being routed: staged, their deliveries not yet
//     published);
//   - an object a waiting delivery names but the store lacks (deleted by
//     hand, lost, or expired under an earlier version's TTL) is staged again
//     from the archive under the same name and key, so that the recipient's
//     agent, which retries and never acknowledges a delivery whose container
//     it could not fetch, finds it on its next attempt.
//
// Nothing here is state of its own, so a crash at any point loses nothing:
// the next sweep, on any hub replica, sees the same streams and store.

// stageRef is what a waiting delivery says about the object it names.
type stageRef struct {
	doc  document.ID
	sha  string
	size int64
	key  []byte
}

// stageSweep counts what one sweep found and did.
type stageSweep struct {
	Waiting  int  // deliveries waiting in EDX_DELIVER that name a staged object
	Named    int  // distinct objects they name
	Deleted  int  // objects deleted: named by no waiting delivery
	Restaged int  // objects staged again from the archive
	Complete bool // every waiting delivery was read (deletions only then)
}

// keepStage sweeps the stage store every StageSweep until ctx is done.
func (p *Pipeline) keepStage(ctx context.Context) {
	t := time.NewTicker(p.cfg.StageSweep)
	defer t.Stop()
	for {
		res, err := p.sweepStage(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.Warn("pipeline: stage sweep", "err", err)
		case res.Deleted > 0 || res.Restaged > 0:
			p.log.Info("stage swept", "waiting", res.Waiting, "named", res.Named, "deleted", res.Deleted, "restaged", res.Restaged)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepStage deletes the staged objects no waiting delivery names (older
// than StageGrace) and stages again, from the archive, those a waiting
// delivery names but the store lacks. Run calls it every StageSweep.
func (p *Pipeline) sweepStage(ctx context.Context) (stageSweep, error) {
	var res stageSweep
	refs, waiting, complete, err := p.stagedRefs(ctx)
	if err != nil {
		return res, err
	}
	res.Waiting, res.Named, res.Complete = waiting, len(refs), complete
	objs, err := p.stage.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return res, fmt.Errorf("pipeline: stage sweep: list: %w", err)
	}
	have := make(map[string]*jetstream.ObjectInfo, len(objs))
	for _, o := range objs {
		if o.Deleted {
			continue
		}
		have[o.Name] = o
		if _, named := refs[o.Name]; named || !complete || p.now().Sub(o.ModTime) < p.cfg.StageGrace {
			continue
		}
		if err := p.stage.Delete(ctx, o.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			p.log.Warn("pipeline: stage sweep: delete", "object", o.Name, "err", err)
			continue
		}
		res.Deleted++
	}
	var errs []error
	for name, r := range refs {
		if o := have[name]; o != nil && o.Size == uint64(r.size)+protocol.StageOverhead {
			continue
		}
		if err := p.restage(ctx, name, r); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Restaged++
		p.log.Warn("staged delivery was missing: staged again from the archive", "doc_id", r.doc, "object", name)
	}
	return res, errors.Join(errs...)
}

// orderedResetAttempts bounds the attempts of an ordered consumer's Fetch
// to make its consumer (1 s, then 2 s apart, each up to 10 s): a sweep
// that fails is tried again at the next StageSweep.
const orderedResetAttempts = 3

// stagedRefs reads the headers of every delivery waiting in EDX_DELIVER and
// returns the staged objects they name, how many deliveries name one, and
// whether the read reached the end of the stream.
func (p *Pipeline) stagedRefs(ctx context.Context) (map[string]stageRef, int, bool, error) {
	refs := map[string]stageRef{}
	str, err := p.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return nil, 0, false, fmt.Errorf("pipeline: stage sweep: %w", err)
	}
	if str.CachedInfo().State.Msgs == 0 {
		return refs, 0, true, nil
	}
	// Headers only: an inline delivery's container is not read. The
	// consumer acks nothing (AckNone): it takes no delivery from its unit.
	// Each Fetch of an ordered consumer makes its consumer anew, retrying
	// without end by default while JetStream does not answer: the sweep
	// then never returned, and Run never did either (CI: TestStatusCrashReplay
	// waited 13 minutes on a pipeline stopped after its server was).
	cons, err := str.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true, InactiveThreshold: time.Minute,
		MaxResetAttempts: orderedResetAttempts})
	if err != nil {
		return nil, 0, false, fmt.Errorf("pipeline: stage sweep: %w", err)
	}
	waiting := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, false, err
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, false, fmt.Errorf("pipeline: stage sweep: %w", err)
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				last = true
			}
			if m.Headers().Get(protocol.HeaderStaged) == "" {
				continue
			}
			d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject(), Header: m.Headers()})
			if err != nil {
				p.log.Warn("pipeline: stage sweep: unreadable delivery", "subject", m.Subject(), "err", err)
				continue
			}
			waiting++
			refs[d.Staged] = stageRef{doc: d.DocumentID, sha: d.SHA256, size: d.Size, key: d.StageKey}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, 0, false, fmt.Errorf("pipeline: stage sweep: %w", err)
		}
		if last {
			return refs, waiting, true, nil
		}
		if n == 0 {
			// Nothing more within the wait: every delivery left after
			// the last one read was acknowledged meanwhile, or the
			// server is slow. Do not delete on a read that may be short.
			return refs, waiting, false, nil
		}
	}
}

// restage stages a document's container again under the name and key its
// deliveries carry, from the archive.
func (p *Pipeline) restage(ctx context.Context, name string, r stageRef) error {
	data, _, err := p.arch.Get(ctx, projection.ContainerKey(r.doc))
	if err != nil {
		return fmt.Errorf("pipeline: restage %s of %s: %w", name, r.doc, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != r.sha {
		return fmt.Errorf("pipeline: restage %s: the archived container of %s has SHA-256 %s, its deliveries say %s", name, r.doc, got, r.sha)
	}
	return protocol.RestageDelivery(ctx, p.stage, name, r.key, data)
}
