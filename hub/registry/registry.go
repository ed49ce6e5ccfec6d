// Package registry is the unit registry every hub of a deployment shares:
// each unit's record (name, certificate, enabled or disabled, the NATS user
// keys of its credentials in force and of those revoked) in a JetStream
// key-value bucket (EDX_UNITS, key = unit id), replicated like the streams.
//
// Each hub keeps an in-memory view fed by a watch of the bucket. A lookup the
// view cannot answer (a unit it does not know, or one it holds as disabled)
// asks the bucket's leader before it answers, so that a unit registered or
// enabled a moment ago through another hub is never refused for it. Writes
// are compare-and-set on the unit's last revision, retried on conflict, so
// two hubs changing one unit never lose a change. Every change is archived
// under units/<id>/ (the archive stays what reindex rebuilds the index from).
package registry

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
)

// Bucket is the registry's key-value bucket.
const Bucket = "EDX_UNITS"

// Version is the newest schema version of the records this code writes.
// Decode reads every earlier one. Encode writes a record at the lowest
// version that holds it (a unit without a witness key stays a version 1
// record), so that hubs of the version before read it during an upgrade.
const Version = 2

// Errors.
var (
	ErrNotFound = errors.New("registry: unit not registered")
	// ErrNewer: a record written by a newer hub, which this one does not
	// read (nor overwrite).
	ErrNewer = errors.New("registry: record of a newer schema version")
	// ErrInvalid: a malformed record or unit id.
	ErrInvalid = errors.New("registry: invalid")
)

// Unit is a unit's record: what the index holds of it (index.Unit, whose
// Event and At say what the last change was and when), and the NATS user
// keys of its earlier credentials, revoked.
type Unit struct {
	index.Unit
	// Revoked are the NATS users the hub revoked for this unit, with when,
	// kept until the credentials they name expire: every hub signs the UNITS
	// account with all of them (Revocations), so that an account pushed by
	// one hub never undoes a revocation made by another.
	Revoked []Revocation `json:"revoked,omitempty"`
	// WitnessKey (version 2) is the key the unit's agent cosigns the hub's
	// transparency log with: a C2SP cosignature/v1 verifier key
	// (pkg/witness). The hub keeps a cosignature only when it verifies with
	// this key.
	WitnessKey string `json:"witness_key,omitempty"`
	// WitnessBinding (version 2) is the unit's own signed statement of its
	// witness key (container.SignWitnessKey, DER CMS, base64 in JSON) when
	// its agent registered the key; empty when the operator registered it
	// with the unit (edx unit add, edx unit rotate). It shows an auditor
	// that the witness is the unit's, not one the hub made up.
	WitnessBinding []byte `json:"witness_binding,omitempty"`
}

// Revocation is a revoked NATS user of a unit.
type Revocation struct {
	Key string    `json:"key"` // the user's public key
	At  time.Time `json:"at"`  // credentials of the key issued up to then are void
	// Expires is when the credentials expire (zero: never), after which the
	// revocation is no longer needed.
	Expires time.Time `json:"expires,omitzero"`
}

// record is a unit's value in the bucket and in the archive.
type record struct {
	V int `json:"v"`
	Unit
}

// Encode is a unit's record, at the lowest version that holds it: 2 with
// a witness key, else 1.
func Encode(u Unit) ([]byte, error) {
	v := 1
	if u.WitnessKey != "" || len(u.WitnessBinding) > 0 {
		v = 2
	}
	return json.MarshalIndent(record{V: v, Unit: u}, "", "  ")
}

// Decode reads a unit record of any version up to Version, upgraded:
//
//	v0  (no "v") a unit as hubs archived it before the registry (index.Unit
//	    with event and at): read as it is, with nothing revoked on record.
//	v1  the registry's first version: no witness key.
//	v2  a witness key (WitnessKey, WitnessBinding).
//
// A newer version is ErrNewer.
func Decode(b []byte) (Unit, error) {
	var head struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return Unit{}, fmt.Errorf("%w: unit record: %v", ErrInvalid, err)
	}
	v := 0
	if head.V != nil {
		v = *head.V
	}
	switch {
	case v > Version:
		return Unit{}, fmt.Errorf("%w: unit record version %d, this hub reads up to %d", ErrNewer, v, Version)
	case v < 0 || head.V != nil && v == 0:
		return Unit{}, fmt.Errorf("%w: unit record version %d", ErrInvalid, v)
	}
	var u Unit
	if err := json.Unmarshal(b, &u); err != nil {
		return Unit{}, fmt.Errorf("%w: unit record (v%d): %v", ErrInvalid, v, err)
	}
	// v0 → v1: the fields are the same; nothing was revoked on record.
	// v1 → v2: no witness key registered.
	if v < 2 {
		u.WitnessKey, u.WitnessBinding = "", nil
	}
	if err := u.ID.Validate(); err != nil {
		return Unit{}, fmt.Errorf("%w: unit record (v%d): %v", ErrInvalid, v, err)
	}
	return u, nil
}

func (u Unit) clone() Unit {
	u.NATSUsers = slices.Clone(u.NATSUsers)
	u.Revoked = slices.Clone(u.Revoked)
	u.WitnessBinding = slices.Clone(u.WitnessBinding)
	return u
}

// Archive is where every change is archived (hub/archive).
type Archive interface {
	Put(ctx context.Context, key string, data []byte, contentType string, meta map[string]string) (archive.Object, error)
}

// ArchiveKey is the archive key of a unit's record changed at t:
// units/<id>/<t in Unix nanoseconds>.json, which reindex reads in key order
// (the last one of a unit wins).
func ArchiveKey(id document.UnitID, t time.Time) string {
	return fmt.Sprintf("units/%s/%d.json", id, t.UnixNano())
}

// Registry is the shared unit registry and this hub's view of it. Its
// methods are safe for concurrent use.
type Registry struct {
	js   jetstream.JetStream
	b    *broker.Bucket
	arch Archive
	log  *slog.Logger
	now  func() time.Time

	mu      sync.RWMutex
	units   map[document.UnitID]entry
	changed chan struct{}

	stop context.CancelFunc
	done chan struct{}
}

type entry struct {
	u   Unit
	rev uint64
}

// maxAttempts bounds the compare-and-set retries of one Update.
const maxAttempts = 32

// metaPrefix starts the registry's own keys (migration markers); unit ids
// never do.
const metaPrefix = "meta."

// Open opens (creating or configuring) the registry's bucket on js, starts
// the watch that feeds the view and returns once the view holds every unit
// the bucket held.
func Open(ctx context.Context, js jetstream.JetStream, opts broker.BucketOptions, arch Archive, log *slog.Logger) (*Registry, error) {
	opts.SetDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if js == nil || arch == nil {
		return nil, errors.New("registry: JetStream and the archive are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := broker.OpenBucket(ctx, js, opts.KeyValueConfig(Bucket, "edx unit registry: one record per unit", opts.UnitHistory, 0))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	r := &Registry{js: js, b: b, arch: arch, log: log, now: time.Now, units: map[document.UnitID]entry{},
		changed: make(chan struct{}, 1), stop: stop, done: make(chan struct{})}
	ready := make(chan struct{})
	go r.watch(wctx, ready)
	select {
	case <-ready:
		return r, nil
	case <-ctx.Done():
		r.Close()
		return nil, fmt.Errorf("registry: reading the units: %w", ctx.Err())
	}
}

// Close stops the watch.
func (r *Registry) Close() {
	r.stop()
	<-r.done
}

// reconnectCheck is how often the watch checks whether its connection
// reconnected, after which it starts again at once rather than wait for
// the watch's consumer to notice its lost heartbeats.
const reconnectCheck = time.Second

// watch feeds the view from the bucket: every unit first (then ready is
// closed), then every change. A watch that ends (the connection closed for
// good, the consumer lost), or whose connection reconnected, starts again
// and reads every unit again; the view keeps the newest revision of each.
func (r *Registry) watch(ctx context.Context, ready chan struct{}) {
	defer close(r.done)
	var once sync.Once
	backoff := 100 * time.Millisecond
	tick := time.NewTicker(reconnectCheck)
	defer tick.Stop()
	reconnects := r.reconnects()
	for ctx.Err() == nil {
		w, err := r.b.KV.WatchAll(ctx)
		if err != nil {
			r.log.Warn("registry: watch", "err", err, "retry_in", backoff)
			if sleep(ctx, backoff) != nil {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-tick.C:
				if n := r.reconnects(); n != reconnects {
					reconnects = n
					r.log.Info("registry: the connection reconnected; watching again")
					break loop
				}
			case e, ok := <-w.Updates():
				if !ok {
					r.log.Warn("registry: watch ended; watching again", "in", backoff)
					if sleep(ctx, backoff) != nil {
						break loop
					}
					backoff = min(2*backoff, 5*time.Second)
					break loop
				}
				if e == nil {
					once.Do(func() { close(ready) })
					backoff = 100 * time.Millisecond
					continue
				}
				r.applyEntry(e)
			}
		}
		w.Stop()
	}
}

// reconnects counts the reconnections of the registry's connection.
func (r *Registry) reconnects() uint64 {
	if nc := r.js.Conn(); nc != nil {
		return nc.Stats().Reconnects
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Registry) applyEntry(e jetstream.KeyValueEntry) {
	key := e.Key()
	if len(key) >= len(metaPrefix) && key[:len(metaPrefix)] == metaPrefix {
		return
	}
	id := document.UnitID(key)
	if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		r.mu.Lock()
		if cur, ok := r.units[id]; ok && cur.rev < e.Revision() {
			delete(r.units, id)
		}
		r.mu.Unlock()
		r.notify()
		return
	}
	u, err := Decode(e.Value())
	if err == nil && u.ID != id {
		err = fmt.Errorf("%w: the record of key %s names unit %s", ErrInvalid, key, u.ID)
	}
	if err != nil {
		r.log.Error("registry: unit record not read: this hub keeps what it knew of the unit", "unit", key, "revision", e.Revision(), "err", err)
		return
	}
	r.apply(u, e.Revision())
}

// apply puts a record in the view unless the view holds a newer one.
func (r *Registry) apply(u Unit, rev uint64) {
	r.mu.Lock()
	cur, ok := r.units[u.ID]
	if !ok || cur.rev < rev {
		r.units[u.ID] = entry{u: u.clone(), rev: rev}
	}
	r.mu.Unlock()
	if !ok || cur.rev < rev {
		r.notify()
	}
}

func (r *Registry) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Changed receives (at most one pending value) after the view changed.
func (r *Registry) Changed() <-chan struct{} { return r.changed }

// Get returns a unit's record: from the view, or, when the view does not
// know the unit, from the bucket's leader. ErrNotFound only when the bucket
// does not hold it either.
func (r *Registry) Get(ctx context.Context, id document.UnitID) (Unit, error) {
	if err := id.Validate(); err != nil {
		return Unit{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	r.mu.RLock()
	e, ok := r.units[id]
	r.mu.RUnlock()
	if ok {
		return e.u.clone(), nil
	}
	u, _, err := r.latest(ctx, id)
	return u, err
}

// Lookup returns a unit's record as the bucket's leader holds it now.
func (r *Registry) Lookup(ctx context.Context, id document.UnitID) (Unit, error) {
	if err := id.Validate(); err != nil {
		return Unit{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	u, _, err := r.latest(ctx, id)
	return u, err
}

// latest reads a unit from the bucket's leader and updates the view.
func (r *Registry) latest(ctx context.Context, id document.UnitID) (Unit, uint64, error) {
	e, err := r.b.Latest(ctx, string(id))
	if errors.Is(err, broker.ErrNoKey) {
		return Unit{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Unit{}, 0, fmt.Errorf("registry: %w", err)
	}
	u, err := Decode(e.Value)
	if err != nil {
		return Unit{}, 0, fmt.Errorf("registry: unit %s (revision %d): %w", id, e.Revision, err)
	}
	r.apply(u, e.Revision)
	return u.clone(), e.Revision, nil
}

// UnitStatus reports whether a unit is registered and whether it is
// disabled, for the pipeline: an active unit in the view is answered at
// once; anything else (unknown to the view, or disabled there) is asked of
// the bucket's leader, so that a refusal never rests on a view that lags.
// An error (the bucket unreachable) says nothing about the unit: retry.
func (r *Registry) UnitStatus(ctx context.Context, id document.UnitID) (registered, disabled bool, err error) {
	if id.Validate() != nil {
		return false, false, nil
	}
	r.mu.RLock()
	e, ok := r.units[id]
	r.mu.RUnlock()
	if ok && !e.u.Disabled {
		return true, false, nil
	}
	u, _, err := r.latest(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, false, nil
	case err != nil:
		return false, false, err
	}
	return true, u.Disabled, nil
}

// List returns every unit in the view, by id.
func (r *Registry) List() []Unit {
	r.mu.RLock()
	out := make([]Unit, 0, len(r.units))
	for _, e := range r.units {
		out = append(out, e.u.clone())
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Unit) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Revocations are the revoked NATS users of every unit in the view whose
// credentials have not expired by now, with when each was revoked.
func (r *Registry) Revocations(now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.units {
		for _, rv := range e.u.Revoked {
			if !rv.Expires.IsZero() && !rv.Expires.After(now) {
				continue
			}
			if t, ok := out[rv.Key]; !ok || rv.At.After(t) {
				out[rv.Key] = rv.At
			}
		}
	}
	return out
}

// Change makes a unit's next record from its current one (exists is false
// for a unit not registered yet, cur then zero). It sets Event; the
// registry sets ID and At. It may be called more than once for one Update
// (after a conflict, with the newer record) and must not keep anything from
// an earlier call. An error ends the Update.
type Change func(cur Unit, exists bool) (Unit, error)

// Update changes a unit with compare-and-set on its last revision: read it
// from the bucket's leader, make the next record, write it only if nobody
// wrote the unit in between, else read again and make it again. Then it
// archives the record (units/<id>/<at>.json). A change in force whose
// archive write failed is returned with the error.
func (r *Registry) Update(ctx context.Context, id document.UnitID, change Change) (Unit, error) {
	if err := id.Validate(); err != nil {
		return Unit{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for attempt := 1; ; attempt++ {
		cur, rev, err := r.latest(ctx, id)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Unit{}, err
		}
		next, err := change(cur, exists)
		if err != nil {
			return Unit{}, err
		}
		next.ID, next.At = id, r.now().UTC()
		if next.Created.IsZero() {
			next.Created = next.At
		}
		next.Revoked = pruneRevoked(next.Revoked, next.At)
		b, err := Encode(next)
		if err != nil {
			return Unit{}, fmt.Errorf("registry: unit %s: %w", id, err)
		}
		var nrev uint64
		if exists {
			nrev, err = r.b.Update(ctx, string(id), b, rev, 0)
		} else {
			nrev, err = r.b.Create(ctx, string(id), b, 0)
		}
		if errors.Is(err, broker.ErrRevision) {
			if attempt < maxAttempts {
				r.log.Debug("registry: unit changed meanwhile, trying again", "unit", id, "attempt", attempt)
				continue
			}
			return Unit{}, fmt.Errorf("registry: unit %s: %d attempts, each raced by another change: %w", id, attempt, err)
		}
		if err != nil {
			return Unit{}, fmt.Errorf("registry: unit %s: %w", id, err)
		}
		r.apply(next, nrev)
		if err := r.archive(ctx, ArchiveKey(id, next.At), b); err != nil {
			return next.clone(), fmt.Errorf("registry: unit %s changed (%s) but its record is not archived: %w", id, next.Event, err)
		}
		return next.clone(), nil
	}
}

// archive writes a changed unit's record, trying again a few times: the
// change is in force already (archived after, so that the archive holds
// only records that were in force, in the order they were).
func (r *Registry) archive(ctx context.Context, key string, b []byte) error {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := r.arch.Put(ctx, key, b, "application/json", nil)
		if err == nil || attempt == 4 || errors.Is(err, archive.ErrConflict) {
			return err
		}
		r.log.Warn("registry: archiving a unit's record, trying again", "key", key, "err", err, "in", wait)
		if sleep(ctx, wait) != nil {
			return err
		}
		wait *= 3
	}
}

// pruneRevoked drops revocations whose credentials expired.
func pruneRevoked(rs []Revocation, now time.Time) []Revocation {
	return slices.DeleteFunc(rs, func(r Revocation) bool { return !r.Expires.IsZero() && !r.Expires.After(now) })
}

// marker records a migration into the registry.
type marker struct {
	V     int       `json:"v"`
	From  string    `json:"from"`
	At    time.Time `json:"at"`
	Units int       `json:"units"` // copied; the others were in the registry already
}

// Import copies units into the registry from an earlier store (a hub's
// SQLite index, from before the registry), once per source: a unit the
// registry holds already keeps its record; then a marker key
// (meta.migrated.<digest of source>) records that source as done, and later
// calls return at once. Interrupted, it starts again where it left (each
// copy is a create, which a present unit refuses). It reports how many
// units it copied; imported records are not archived again (they came from
// the archive).
func (r *Registry) Import(ctx context.Context, source string, units []Unit) (int, error) {
	sum := sha256.Sum256([]byte(source))
	mkey := metaPrefix + "migrated." + hex.EncodeToString(sum[:8])
	if _, err := r.b.Latest(ctx, mkey); err == nil {
		return 0, nil
	} else if !errors.Is(err, broker.ErrNoKey) {
		return 0, fmt.Errorf("registry: import: %w", err)
	}
	n := 0
	for _, u := range units {
		if err := u.ID.Validate(); err != nil {
			return n, fmt.Errorf("registry: import from %s: %w: %v", source, ErrInvalid, err)
		}
		b, err := Encode(u)
		if err != nil {
			return n, err
		}
		rev, err := r.b.Create(ctx, string(u.ID), b, 0)
		switch {
		case errors.Is(err, broker.ErrRevision):
			r.log.Info("registry: import: unit already registered, its record stays", "unit", u.ID, "from", source)
			continue
		case err != nil:
			return n, fmt.Errorf("registry: import from %s: %w", source, err)
		}
		r.apply(u, rev)
		n++
	}
	mb, _ := json.Marshal(marker{V: 1, From: source, At: r.now().UTC(), Units: n})
	if _, err := r.b.Create(ctx, mkey, mb, 0); err != nil && !errors.Is(err, broker.ErrRevision) {
		return n, fmt.Errorf("registry: import from %s: marker: %w", source, err)
	}
	r.log.Info("registry: units imported", "from", source, "copied", n, "of", len(units))
	return n, nil
}
