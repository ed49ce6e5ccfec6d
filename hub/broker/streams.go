package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// Defaults of StreamOptions.
const (
	DefaultDuplicates = 24 * time.Hour
	DefaultMaxAge     = 30 * 24 * time.Hour
	DefaultStageTTL   = 7 * 24 * time.Hour
)

// UnitAckWait is how long a unit's consumers wait for an ack before they
// redeliver. An agent that needs longer for one message (a large container
// over a slow link) sends in-progress acks.
const UnitAckWait = 30 * time.Second

// StreamOptions sizes the JetStream streams and the staging object store.
// Zero values take the defaults.
type StreamOptions struct {
	// Replicas of every stream and of the object store: 1 for the embedded
	// server (default), 3 in a cluster.
	Replicas int `yaml:"replicas"`
	// Duplicates is the Nats-Msg-Id de-duplication window of every stream
	// (default 24h, so an agent replaying its spool after a day-long outage
	// is still de-duplicated; the hub's steps are idempotent beyond it). It is
	// capped at a stream's max age.
	Duplicates time.Duration `yaml:"duplicates"`
	// SubmitMaxAge bounds how long an unprocessed submission waits for the
	// hub in the work queue; zero keeps it until the hub acks it.
	SubmitMaxAge time.Duration `yaml:"submit_max_age"`
	// DeliverMaxAge and NoticeMaxAge bound how long a delivery or a notice
	// waits for its unit. The default, zero, keeps it until the unit's agent
	// acknowledges it, however long the unit stays offline: both streams
	// have interest retention, so an acknowledged message is removed and
	// storage stays bounded by what units have not fetched yet.
	// StatusMaxAge bounds EDX_STATUS (default 30 days).
	DeliverMaxAge time.Duration `yaml:"deliver_max_age"`
	StatusMaxAge  time.Duration `yaml:"status_max_age"`
	NoticeMaxAge  time.Duration `yaml:"notice_max_age"`
	// MaxMsgSize is the largest message any stream accepts (default 8 MiB).
	// It must hold an inline container with its envelope, and must not
	// exceed the server's max_payload; larger containers go through the
	// object store.
	MaxMsgSize int32 `yaml:"max_msg_size"`
	// StageTTL is how long a staged submission waits for the hub in the
	// upload store (default 7 days). The stage store of deliveries has no
	// TTL: a staged delivery lives as long as a delivery waiting for its
	// unit names it (the hub's pipeline sweeps it, hub/pipeline stage.go).
	StageTTL time.Duration `yaml:"stage_ttl"`
	// StageMaxBytes bounds each of the two object stores; zero is unlimited.
	StageMaxBytes int64 `yaml:"stage_max_bytes"`
}

func (o *StreamOptions) setDefaults() {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Duplicates == 0 {
		o.Duplicates = DefaultDuplicates
	}
	if o.StatusMaxAge == 0 {
		o.StatusMaxAge = DefaultMaxAge
	}
	if o.MaxMsgSize == 0 {
		o.MaxMsgSize = DefaultMaxPayload
	}
	if o.StageTTL == 0 {
		o.StageTTL = DefaultStageTTL
	}
}

// Validate reports the first problem with defaulted options.
func (o *StreamOptions) Validate() error {
	switch {
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("broker: streams: replicas %d not in 1..5", o.Replicas)
	case o.Duplicates < 0, o.SubmitMaxAge < 0, o.DeliverMaxAge < 0, o.StatusMaxAge < 0,
		o.NoticeMaxAge < 0, o.StageTTL < 0:
		return errors.New("broker: streams: negative duration")
	case o.MaxMsgSize < 0 || o.StageMaxBytes < 0:
		return errors.New("broker: streams: negative size")
	}
	return nil
}

// MaxUnitConsumers bounds the consumers of each edx stream: far above the
// number of units a hub serves, one per unit on the delivery and notice
// streams.
const MaxUnitConsumers = 1_000_000

// StreamConfigs returns the configurations EnsureStreams applies: the EDX
// account's streams in order (EDX_SUBMIT, EDX_DELIVER, EDX_STATUS,
// EDX_NOTICE, and OBJ_EDX_UPLOAD behind the upload store), and the stage
// store's in the STAGE account.
//
// The upload store is laid out as an object store (chunks under
// $O.EDX_UPLOAD.C.<nuid>, one meta message per object under
// $O.EDX_UPLOAD.M.<name>), so that the hub reads it with an ObjectStore
// handle, but created as a plain stream without rollups: units publish to
// it, and a unit's Nats-Rollup header would purge other units' uploads (with
// "all", the whole stream). Units write it with protocol.UploadStaged.
func StreamConfigs(opts StreamOptions) ([]jetstream.StreamConfig, jetstream.ObjectStoreConfig) {
	opts.setDefaults()
	stream := func(name, prefix, desc string, retention jetstream.RetentionPolicy, maxAge time.Duration) jetstream.StreamConfig {
		dup := opts.Duplicates
		if maxAge > 0 && dup > maxAge {
			dup = maxAge
		}
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{prefix + ">"},
			Retention:   retention,
			Storage:     jetstream.FileStorage,
			Replicas:    opts.Replicas,
			MaxAge:      maxAge,
			MaxMsgSize:  opts.MaxMsgSize,
			Duplicates:  dup,
			Discard:     jetstream.DiscardOld,
			// Set, because nats-server otherwise caps a stream at 1,000
			// consumers and every unit has one on EDX_DELIVER and on
			// EDX_NOTICE (Ho Chi Minh City alone has more than 1,500 units).
			MaxConsumers: MaxUnitConsumers,
		}
	}
	streams := []jetstream.StreamConfig{
		stream(protocol.StreamSubmit, protocol.SubjectSubmitPrefix, "edx submissions, one subject per sending unit",
			jetstream.WorkQueuePolicy, opts.SubmitMaxAge),
		stream(protocol.StreamDeliver, protocol.SubjectDeliverPrefix, "edx deliveries, one subject per recipient unit",
			jetstream.InterestPolicy, opts.DeliverMaxAge),
		stream(protocol.StreamStatus, protocol.SubjectStatusPrefix, "edx status updates, one subject per reporting unit",
			jetstream.LimitsPolicy, opts.StatusMaxAge),
		stream(protocol.StreamNotice, protocol.SubjectNoticePrefix, "edx notices to senders, one subject per unit",
			jetstream.InterestPolicy, opts.NoticeMaxAge),
	}
	upload := jetstream.StreamConfig{
		Name:        uploadStream,
		Description: "edx submissions above the inline limit, encrypted; units write, the hub reads",
		Subjects:    []string{"$O." + protocol.UploadBucket + ".C.>", "$O." + protocol.UploadBucket + ".M.>"},
		MaxAge:      opts.StageTTL,
		MaxBytes:    opts.StageMaxBytes,
		MaxMsgSize:  opts.MaxMsgSize,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Discard:     jetstream.DiscardNew,
		AllowDirect: true,
		AllowRollup: false,
		DenyDelete:  true,
	}
	if upload.MaxBytes == 0 {
		upload.MaxBytes = -1
	}
	streams = append(streams, upload)
	stage := jetstream.ObjectStoreConfig{
		Bucket:      protocol.StageBucket,
		Description: "edx deliveries above the inline limit, encrypted; the hub writes, units read",
		// No TTL: an object lives while a waiting delivery names it.
		MaxBytes: opts.StageMaxBytes,
		Storage:  jetstream.FileStorage,
		Replicas: opts.Replicas,
	}
	if stage.MaxBytes == 0 {
		stage.MaxBytes = -1
	}
	return streams, stage
}

// EnsureStreams creates the edx streams and the upload store in the EDX
// account (js, the hub's connection there) and the stage store in the STAGE
// account (stage, the hub's connection there), or updates them to opts. It is
// idempotent and works against the embedded server and an external cluster
// alike (HubConn holds both connections).
func EnsureStreams(ctx context.Context, js, stage jetstream.JetStream, opts StreamOptions) error {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return err
	}
	if js == nil || stage == nil {
		return errors.New("broker: streams: the EDX and the STAGE connections are both required")
	}
	if nc := js.Conn(); nc != nil {
		if mp := nc.MaxPayload(); mp > 0 && int64(opts.MaxMsgSize) > mp {
			return fmt.Errorf("broker: streams: max_msg_size %d exceeds the server's max_payload %d", opts.MaxMsgSize, mp)
		}
	}
	streams, stageCfg := StreamConfigs(opts)
	for _, cfg := range streams {
		// A stream's retention cannot change once created: one made by an
		// earlier version keeps its own.
		if st, err := js.Stream(ctx, cfg.Name); err == nil && st.CachedInfo().Config.Retention != cfg.Retention {
			cfg.Retention = st.CachedInfo().Config.Retention
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("broker: ensure stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := stage.CreateOrUpdateObjectStore(ctx, stageCfg); err != nil {
		return fmt.Errorf("broker: ensure object store %s: %w", stageCfg.Bucket, err)
	}
	return nil
}

// UnitConsumerConfigs returns the durable pull consumers of a unit: its
// deliveries on EDX_DELIVER and its notices on EDX_NOTICE.
func UnitConsumerConfigs(unit string) map[string]jetstream.ConsumerConfig {
	cons := func(name, subject, desc string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{
			Durable:       name,
			Description:   desc,
			FilterSubject: subject,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       UnitAckWait,
			MaxDeliver:    -1,
		}
	}
	return map[string]jetstream.ConsumerConfig{
		protocol.StreamDeliver: cons(protocol.DeliverConsumer(unit), protocol.DeliverSubject(unit), "deliveries to "+unit),
		protocol.StreamNotice:  cons(protocol.NoticeConsumer(unit), protocol.NoticeSubject(unit), "notices to "+unit),
	}
}

// EnsureUnitConsumers creates (or updates) the two durable pull consumers of
// a unit. Units cannot create consumers themselves: the hub calls this when it
// registers a unit. It is idempotent.
func EnsureUnitConsumers(ctx context.Context, js jetstream.JetStream, unit string) error {
	if err := validUnit(unit); err != nil {
		return err
	}
	for _, stream := range []string{protocol.StreamDeliver, protocol.StreamNotice} {
		cfg := UnitConsumerConfigs(unit)[stream]
		if _, err := js.CreateOrUpdateConsumer(ctx, stream, cfg); err != nil {
			return fmt.Errorf("broker: ensure consumer %s on %s: %w", cfg.Durable, stream, err)
		}
	}
	return nil
}
