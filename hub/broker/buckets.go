package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of BucketOptions.
const (
	DefaultBucketMaxBytes = 128 << 20
	DefaultUnitHistory    = 10
)

// BucketOptions place and size the hub's key-value buckets: the unit
// registry (hub/registry) and the accounts (hub/auth), which every hub of a
// deployment shares. Zero values take the defaults.
type BucketOptions struct {
	// Replicas of every bucket: 1 for the embedded server, 3 in a cluster.
	// Default: nats.streams.replicas (the hub sets it).
	Replicas int `yaml:"replicas"`
	// Cluster and Tags place the buckets (JetStream placement); empty:
	// wherever the servers put them.
	Cluster string   `yaml:"cluster"`
	Tags    []string `yaml:"tags"`
	// MaxBytes bounds each bucket (default 128 MiB); a full bucket refuses
	// writes, it drops nothing. JetStream reserves it when it creates the
	// bucket, as it does a stream's max_bytes.
	MaxBytes int64 `yaml:"max_bytes"`
	// UnitHistory is how many revisions of each unit the registry keeps
	// (default 10); the archive keeps every one (units/).
	UnitHistory int `yaml:"unit_history"`
}

// SetDefaults fills in what is zero; Replicas defaults to 1.
func (o *BucketOptions) SetDefaults() {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultBucketMaxBytes
	}
	if o.UnitHistory == 0 {
		o.UnitHistory = DefaultUnitHistory
	}
}

// Validate reports the first problem with defaulted options.
func (o *BucketOptions) Validate() error {
	switch {
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("broker: buckets: replicas %d not in 1..5", o.Replicas)
	case o.MaxBytes < 1<<20:
		return fmt.Errorf("broker: buckets: max_bytes %d: want at least 1 MiB", o.MaxBytes)
	case o.UnitHistory < 2 || o.UnitHistory > jetstream.KeyValueMaxHistory:
		return fmt.Errorf("broker: buckets: unit_history %d not in 2..%d", o.UnitHistory, jetstream.KeyValueMaxHistory)
	}
	return nil
}

// KeyValueConfig is a bucket's configuration under these options, keeping
// history revisions of each key; markerTTL > 0 allows per-key TTLs
// (Bucket.Write) and keeps the markers of expired keys that long.
func (o BucketOptions) KeyValueConfig(bucket, description string, history int, markerTTL time.Duration) jetstream.KeyValueConfig {
	o.SetDefaults()
	cfg := jetstream.KeyValueConfig{
		Bucket: bucket, Description: description, History: uint8(history), MaxBytes: o.MaxBytes,
		Storage: jetstream.FileStorage, Replicas: o.Replicas, LimitMarkerTTL: markerTTL,
	}
	if o.Cluster != "" || len(o.Tags) > 0 {
		cfg.Placement = &jetstream.Placement{Cluster: o.Cluster, Tags: o.Tags}
	}
	return cfg
}

// Bucket is a JetStream key-value bucket with the reads the hub decides on:
// Latest asks the stream's leader, never a replica that may lag behind a
// write another hub just made (a KV Get may be answered by any replica).
type Bucket struct {
	KV     jetstream.KeyValue
	js     jetstream.JetStream
	stream string // KV_<bucket>
	prefix string // $KV.<bucket>.
}

// Errors of Bucket.
var (
	// ErrNoKey: the key does not exist, or was deleted.
	ErrNoKey = errors.New("broker: no such key")
	// ErrRevision: the key changed since the revision a write expected (or
	// exists, for a create): read it again and retry.
	ErrRevision = errors.New("broker: the key changed meanwhile")
)

// OpenBucket creates the bucket of cfg or brings an existing one to cfg.
// While JetStream is not ready for it (NotReady: on a cluster just
// started, a replicated bucket's creation can outlast a request's timeout
// while its group elects a leader), it tries again, for up to StartWait;
// it returns once the bucket's leader answers.
func OpenBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (*Bucket, error) {
	deadline := time.Now().Add(StartWait)
	for {
		kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
		if err == nil {
			// Its stream's leader answers (the reads the hub decides on
			// ask it): on a new cluster, the first read could otherwise
			// time out while the group elects one.
			_, err = js.Stream(ctx, "KV_"+cfg.Bucket)
		}
		if err == nil {
			return &Bucket{KV: kv, js: js, stream: "KV_" + cfg.Bucket, prefix: "$KV." + cfg.Bucket + "."}, nil
		}
		if !NotReady(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("broker: bucket %s: %w (every bucket reserves its max_bytes: lower nats.buckets.max_bytes or give JetStream more room)", cfg.Bucket, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// StartWait bounds how long a starting hub waits for a JetStream cluster
// that cannot take its streams and buckets yet (no meta leader elected, too
// few servers up for the replicas, a new group electing its leader).
const StartWait = 2 * time.Minute

// NotReady reports an error of a JetStream that may take a stream or
// bucket soon: a request timed out, the cluster has no leader, not enough
// servers for the replicas are up, or a server has not enabled the
// account's JetStream, or found the account, yet.
func NotReady(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		// JSClusterNotAvailErr, JSClusterNoPeersErr, and JSNotEnabledForAccountErr:
		// a server of a cluster just started may not have set up the
		// account's JetStream yet. JSNoAccountErr: a server of the new
		// stream's group could not look the account up yet (CI: e2e
		// TestClusterSurvivesCrashes, a hub gave up on EDX_STAGE with
		// "account not found" at its first start); an account missing for
		// good fails after StartWait all the same.
		return api.ErrorCode == 10008 || api.ErrorCode == 10005 || api.ErrorCode == 10039 || api.ErrorCode == 10035
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// Entry is a key's value at a revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	Created  time.Time
}

// apiPrefix is the JetStream API prefix of js, ending in a dot.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// Latest returns the key's current value, read from the stream's leader.
// key may hold "*" tokens (a key whose last token is unique, found without
// the tokens before it); the newest match counts. A key that does not exist
// or whose newest message is a delete is ErrNoKey.
func (b *Bucket) Latest(ctx context.Context, key string) (Entry, error) {
	req, _ := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{b.prefix + key})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg, err := b.js.Conn().RequestWithContext(ctx, apiPrefix(b.js)+"STREAM.MSG.GET."+b.stream, req)
	if err != nil {
		return Entry{}, fmt.Errorf("broker: bucket %s: get %s: %w", b.stream, key, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return Entry{}, fmt.Errorf("broker: bucket %s: get %s: %w", b.stream, key, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return Entry{}, ErrNoKey
	case resp.Error != nil:
		return Entry{}, fmt.Errorf("broker: bucket %s: get %s: %w", b.stream, key, resp.Error)
	case resp.Message == nil:
		return Entry{}, fmt.Errorf("broker: bucket %s: get %s: empty answer", b.stream, key)
	}
	m := resp.Message
	if len(m.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return Entry{}, fmt.Errorf("broker: bucket %s: get %s: %w", b.stream, key, err)
		}
		if h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "" {
			return Entry{}, ErrNoKey // deleted, purged or expired
		}
	}
	return Entry{Key: strings.TrimPrefix(m.Subject, b.prefix), Value: m.Data, Revision: m.Seq, Created: m.Time}, nil
}

// Create writes a key that must not exist (a deleted one may be created
// again), expiring after ttl when ttl > 0: ErrRevision when it exists.
func (b *Bucket) Create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	rev, err := b.KV.Create(ctx, key, value, opts...)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s", ErrRevision, key)
	}
	if err != nil {
		return 0, fmt.Errorf("broker: bucket %s: create %s: %w", b.stream, key, err)
	}
	return rev, nil
}

// Update writes a key if its latest revision is still rev (ErrRevision
// otherwise), expiring after ttl when ttl > 0 (the key's new message
// carries the TTL: each write sets it again).
func (b *Bucket) Update(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if ttl <= 0 {
		n, err = b.KV.Update(ctx, key, value, rev)
	} else {
		var pa *jetstream.PubAck
		pa, err = b.js.PublishMsg(ctx, &nats.Msg{Subject: b.prefix + key, Data: value},
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
		if err == nil {
			n = pa.Sequence
		}
	}
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists),
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return 0, fmt.Errorf("%w: %s", ErrRevision, key)
	}
	return 0, fmt.Errorf("broker: bucket %s: update %s: %w", b.stream, key, err)
}

// Delete deletes a key (its history stays until it ages out); rev > 0 only
// if that is still its latest revision (ErrRevision otherwise).
func (b *Bucket) Delete(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev > 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	err := b.KV.Delete(ctx, key, opts...)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return fmt.Errorf("%w: %s", ErrRevision, key)
	}
	return fmt.Errorf("broker: bucket %s: delete %s: %w", b.stream, key, err)
}

// Values returns the current value of every key matching filter (with "*"
// and ">" tokens), deleted ones left out, in one pass over the bucket.
func (b *Bucket) Values(ctx context.Context, filter string) ([]Entry, error) {
	w, err := b.KV.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("broker: bucket %s: values %s: %w", b.stream, filter, err)
	}
	defer w.Stop()
	var out []Entry
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("broker: bucket %s: values %s: the watch ended", b.stream, filter)
			}
			if e == nil {
				return out, nil
			}
			out = append(out, Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Created: e.Created()})
		}
	}
}
