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

	// Every stream is bounded in bytes and messages. JetStream reserves
	// each stream's max_bytes when it creates the stream (the streams'
	// sum must fit in the server's JetStream store, 75% of the free disk
	// unless max_store says otherwise), so that no stream filling up takes
	// the room of another: a full stream refuses new messages (discard
	// new), it never drops one.
	DefaultSubmitMaxBytes  = 1 << 30
	DefaultDeliverMaxBytes = 4 << 30
	DefaultNoticeMaxBytes  = 512 << 20
	DefaultStatusMaxBytes  = 256 << 20
	DefaultUploadMaxBytes  = 2 << 30
	DefaultStageMaxBytes   = 4 << 30
	DefaultEventsMaxBytes  = 256 << 20
	DefaultMaxMsgs         = 10_000_000

	// Per unit: how many of its submissions and statuses may wait for the
	// hub at once, and how many bytes of uploads it may have staged. The
	// server refuses a unit's publish beyond them (discard new per
	// subject): one unit filling its share leaves the others theirs.
	DefaultSubmitUnitPending = 32
	DefaultStatusUnitPending = 1000
	DefaultUploadUnitQuota   = 512 << 20
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
	// acknowledges it, however long the unit stays offline: the hub removes
	// what a unit's agent acknowledged (Trimmer), so storage stays bounded
	// by what units have not fetched yet. Deliveries and notices share
	// EDX_DELIVER: it keeps a message as long as the longer of the two says
	// (zero: until acknowledged).
	// StatusMaxAge bounds EDX_STATUS (default 30 days); the hub removes a
	// status once it has recorded or refused it.
	DeliverMaxAge time.Duration `yaml:"deliver_max_age"`
	StatusMaxAge  time.Duration `yaml:"status_max_age"`
	NoticeMaxAge  time.Duration `yaml:"notice_max_age"`
	// MaxMsgSize is the largest message EDX_SUBMIT and EDX_DELIVER accept
	// (default 8 MiB). It must hold an inline container
	// with its envelope, and must not exceed the server's max_payload;
	// larger containers go through the object stores. EDX_STATUS and
	// EDX_UPLOAD have limits of their own (protocol.MaxStatusSize,
	// protocol.MaxUploadMsgSize).
	MaxMsgSize int32 `yaml:"max_msg_size"`
	// StageTTL is the longest a staged submission waits for the hub in the
	// upload stream (default 7 days); the hub removes an upload once it has
	// processed its submission, and one no submission can use sooner
	// (pipeline.upload_orphan_after). The stage store of deliveries has no
	// TTL: a staged delivery lives as long as a delivery waiting for its
	// unit names it (the hub's pipeline sweeps it, hub/pipeline stage.go).
	StageTTL time.Duration `yaml:"stage_ttl"`
	// EventsMaxAge bounds how long the hubs' decision events are kept
	// (EDX_EVENTS, default 30 days, the de-duplication window at most): a
	// hub away for longer, or one whose consumer was lost, rebuilds its
	// index from the archive, which holds everything the events report.
	EventsMaxAge time.Duration `yaml:"events_max_age"`

	// Bytes and messages of each stream (defaults above). A full stream
	// refuses new messages: a unit's publish fails and its agent retries;
	// the hub's routing is retried until there is room, nothing is dropped.
	// EDX_DELIVER holds deliveries and notices: its limits are the sums of
	// deliver_* and notice_*.
	SubmitMaxBytes  int64 `yaml:"submit_max_bytes"`
	SubmitMaxMsgs   int64 `yaml:"submit_max_msgs"`
	DeliverMaxBytes int64 `yaml:"deliver_max_bytes"`
	DeliverMaxMsgs  int64 `yaml:"deliver_max_msgs"`
	NoticeMaxBytes  int64 `yaml:"notice_max_bytes"`
	NoticeMaxMsgs   int64 `yaml:"notice_max_msgs"`
	StatusMaxBytes  int64 `yaml:"status_max_bytes"`
	StatusMaxMsgs   int64 `yaml:"status_max_msgs"`
	UploadMaxBytes  int64 `yaml:"upload_max_bytes"`
	StageMaxBytes   int64 `yaml:"stage_max_bytes"`
	// EventsMaxBytes and EventsMaxMsgs bound EDX_EVENTS. Unlike the other
	// streams, a full EDX_EVENTS drops its oldest events rather than refuse
	// new ones (a decision is never held up for room): a hub that had not
	// applied them yet rebuilds its index from the archive.
	EventsMaxBytes int64 `yaml:"events_max_bytes"`
	EventsMaxMsgs  int64 `yaml:"events_max_msgs"`

	// SubmitUnitPending and StatusUnitPending bound how many submissions
	// and statuses of one unit wait for the hub at once; UploadUnitQuota
	// bounds the bytes one unit has in the upload stream (chunks the hub has
	// not read yet, and uploads never submitted until the hub sweeps them,
	// pipeline.upload_orphan_after, or stage_ttl expires them). It must hold
	// the largest container the pipeline accepts.
	SubmitUnitPending int64 `yaml:"submit_unit_pending"`
	StatusUnitPending int64 `yaml:"status_unit_pending"`
	UploadUnitQuota   int64 `yaml:"upload_unit_quota"`

	// UnitConsumers is where each unit's consumer keeps its state (which
	// messages were delivered and acknowledged): "memory" (default) or
	// "file". Memory costs no disk write per acknowledgement and, in a
	// cluster, no replication; a server that restarts forgets it, and the
	// unit's agent gets again what it had not acknowledged when the hub
	// last removed it (Trimmer), which the agent recognises and hands over
	// once (agent/inbox). Either way the consumer has one replica: it is a
	// cursor, the messages stay in EDX_DELIVER until acknowledged.
	// "cursor" keeps no consumer per unit: each agent keeps its cursor and
	// asks the hub for what follows it (Cursors, protocol.FetchRequest),
	// which costs the hub some 40 KB less per unit; the hub deletes the
	// units' consumers, and agents of an earlier version, which read only
	// consumers, receive nothing until upgraded.
	UnitConsumers string `yaml:"unit_consumers"`
}

// Where a unit's consumer keeps its state (StreamOptions.UnitConsumers).
const (
	UnitConsumersMemory = "memory"
	UnitConsumersFile   = "file"
)

// SetDefaults fills in what is zero.
func (o *StreamOptions) SetDefaults() {
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
	if o.EventsMaxAge == 0 {
		o.EventsMaxAge = DefaultMaxAge
	}
	if o.UnitConsumers == "" {
		o.UnitConsumers = UnitConsumersMemory
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.SubmitMaxBytes, DefaultSubmitMaxBytes)
	def(&o.DeliverMaxBytes, DefaultDeliverMaxBytes)
	def(&o.NoticeMaxBytes, DefaultNoticeMaxBytes)
	def(&o.StatusMaxBytes, DefaultStatusMaxBytes)
	def(&o.UploadMaxBytes, DefaultUploadMaxBytes)
	def(&o.StageMaxBytes, DefaultStageMaxBytes)
	def(&o.EventsMaxBytes, DefaultEventsMaxBytes)
	for _, v := range []*int64{&o.SubmitMaxMsgs, &o.DeliverMaxMsgs, &o.NoticeMaxMsgs, &o.StatusMaxMsgs, &o.EventsMaxMsgs} {
		def(v, DefaultMaxMsgs)
	}
	def(&o.SubmitUnitPending, DefaultSubmitUnitPending)
	def(&o.StatusUnitPending, DefaultStatusUnitPending)
	def(&o.UploadUnitQuota, DefaultUploadUnitQuota)
}

// Validate reports the first problem with defaulted options.
func (o *StreamOptions) Validate() error {
	switch {
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("broker: streams: replicas %d not in 1..5", o.Replicas)
	case o.Duplicates < 0, o.SubmitMaxAge < 0, o.DeliverMaxAge < 0, o.StatusMaxAge < 0,
		o.NoticeMaxAge < 0, o.StageTTL < 0, o.EventsMaxAge < 0:
		return errors.New("broker: streams: negative duration")
	case o.MaxMsgSize < 0:
		return errors.New("broker: streams: negative size")
	case o.UnitConsumers != UnitConsumersMemory && o.UnitConsumers != UnitConsumersFile && o.UnitConsumers != UnitConsumersCursor:
		return fmt.Errorf("broker: streams: unit_consumers %q: want %q, %q or %q", o.UnitConsumers, UnitConsumersMemory, UnitConsumersFile, UnitConsumersCursor)
	}
	for _, v := range []struct {
		name string
		v    int64
	}{
		{"submit_max_bytes", o.SubmitMaxBytes}, {"submit_max_msgs", o.SubmitMaxMsgs},
		{"deliver_max_bytes", o.DeliverMaxBytes}, {"deliver_max_msgs", o.DeliverMaxMsgs},
		{"notice_max_bytes", o.NoticeMaxBytes}, {"notice_max_msgs", o.NoticeMaxMsgs},
		{"status_max_bytes", o.StatusMaxBytes}, {"status_max_msgs", o.StatusMaxMsgs},
		{"upload_max_bytes", o.UploadMaxBytes}, {"stage_max_bytes", o.StageMaxBytes},
		{"events_max_bytes", o.EventsMaxBytes}, {"events_max_msgs", o.EventsMaxMsgs},
		{"submit_unit_pending", o.SubmitUnitPending}, {"status_unit_pending", o.StatusUnitPending},
		{"upload_unit_quota", o.UploadUnitQuota},
	} {
		if v.v < 0 {
			return fmt.Errorf("broker: streams: %s %d is negative (every stream is bounded; zero takes the default)", v.name, v.v)
		}
	}
	switch {
	case o.SubmitMaxBytes < int64(o.MaxMsgSize) || o.DeliverMaxBytes < int64(o.MaxMsgSize) || o.NoticeMaxBytes < int64(o.MaxMsgSize) ||
		o.EventsMaxBytes < int64(o.MaxMsgSize):
		return fmt.Errorf("broker: streams: submit, deliver, notice and events max_bytes must hold at least one message of max_msg_size %d", o.MaxMsgSize)
	// One unit's share of a stream must leave room for the others.
	case o.UploadUnitQuota < protocol.MaxUploadMsgSize || o.UploadUnitQuota > o.UploadMaxBytes/2:
		return fmt.Errorf("broker: streams: upload_unit_quota %d: want at least one chunk (%d) and at most half of upload_max_bytes %d", o.UploadUnitQuota, protocol.MaxUploadMsgSize, o.UploadMaxBytes)
	case o.SubmitUnitPending*int64(o.MaxMsgSize) > o.SubmitMaxBytes/2:
		return fmt.Errorf("broker: streams: submit_unit_pending %d messages of max_msg_size %d: more than half of submit_max_bytes %d", o.SubmitUnitPending, o.MaxMsgSize, o.SubmitMaxBytes)
	case o.StatusUnitPending*statusMsgSize > o.StatusMaxBytes/2:
		return fmt.Errorf("broker: streams: status_unit_pending %d statuses of up to %d bytes: more than half of status_max_bytes %d", o.StatusUnitPending, statusMsgSize, o.StatusMaxBytes)
	}
	return nil
}

// statusMsgSize bounds a message of EDX_STATUS: a status and its headers.
const statusMsgSize = protocol.MaxStatusSize + 4<<10

// MaxUnitConsumers bounds the consumers of each edx stream: far above the
// number of units a hub serves, one per unit on EDX_DELIVER.
const MaxUnitConsumers = 1_000_000

// StreamConfigs returns the configurations EnsureStreams applies: the EDX
// account's streams in order (EDX_SUBMIT, EDX_DELIVER, EDX_STATUS,
// EDX_UPLOAD, EDX_EVENTS), and the stage store's in the STAGE account.
//
// EDX_DELIVER holds what units receive, deliveries and notices, and each
// unit reads its own with one consumer (UnitConsumerConfig). It has limits
// retention: the server keeps a message until the hub removes it, once the
// unit's agent acknowledged it (Trimmer). (With interest retention the
// server removed it itself, but it then checked every acknowledgement
// against every consumer of the stream, one per unit: a cost per document
// that grew with the number of units. It also required every consumer to
// have the stream's replicas.)
//
// Every stream has max_bytes and max_msgs and refuses new messages when
// full (discard new): nothing waiting for a unit or for the hub is ever
// dropped to make room. EDX_EVENTS is the exception: it drops its oldest
// events (discard old), whose content the archive holds; a hub that had
// not applied them rebuilds its index from the archive (hub/events). The streams units write are further bounded per
// unit, by subject (one subject per unit, discard new per subject):
// EDX_SUBMIT and EDX_STATUS hold at most submit_unit_pending and
// status_unit_pending messages of one unit, EDX_UPLOAD at most
// upload_unit_quota bytes of one unit (chunks of protocol.MaxUploadMsgSize).
//
// The upload stream (protocol.UploadStaged) is a plain stream with one
// subject per unit, so that the server can count a unit's share; the hub
// reads an upload by sequence (protocol.GetUpload) and removes it once
// processed.
func StreamConfigs(opts StreamOptions) ([]jetstream.StreamConfig, jetstream.ObjectStoreConfig) {
	opts.SetDefaults()
	stream := func(name, prefix, desc string, retention jetstream.RetentionPolicy, maxAge time.Duration, maxBytes, maxMsgs int64) jetstream.StreamConfig {
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
			MaxBytes:    maxBytes,
			MaxMsgs:     maxMsgs,
			MaxMsgSize:  opts.MaxMsgSize,
			Duplicates:  dup,
			Discard:     jetstream.DiscardNew,
			// Set, because nats-server otherwise caps a stream at 1,000
			// consumers and every unit has one on EDX_DELIVER (Ho Chi
			// Minh City alone has more than 1,500 units).
			MaxConsumers: MaxUnitConsumers,
		}
	}
	perUnit := func(cfg jetstream.StreamConfig, n int64) jetstream.StreamConfig {
		cfg.MaxMsgsPerSubject = n
		cfg.DiscardNewPerSubject = true
		return cfg
	}
	submit := perUnit(stream(protocol.StreamSubmit, protocol.SubjectSubmitPrefix, "edx submissions, one subject per sending unit",
		jetstream.WorkQueuePolicy, opts.SubmitMaxAge, opts.SubmitMaxBytes, opts.SubmitMaxMsgs), opts.SubmitUnitPending)
	status := perUnit(stream(protocol.StreamStatus, protocol.SubjectStatusPrefix, "edx status updates, one subject per reporting unit",
		jetstream.LimitsPolicy, opts.StatusMaxAge, opts.StatusMaxBytes, opts.StatusMaxMsgs), opts.StatusUnitPending)
	status.MaxMsgSize = statusMsgSize
	chunks := (opts.UploadUnitQuota + protocol.MaxUploadMsgSize - 1) / protocol.MaxUploadMsgSize
	upload := perUnit(stream(protocol.StreamUpload, protocol.SubjectUploadPrefix, "edx submissions above the inline limit, encrypted, one subject per unit; units write, the hub reads and removes",
		jetstream.LimitsPolicy, opts.StageTTL, opts.UploadMaxBytes, opts.UploadMaxBytes/protocol.UploadChunkSize+1), chunks)
	upload.MaxMsgSize = protocol.MaxUploadMsgSize
	upload.Duplicates = 2 * time.Minute // chunks carry no Msg-Id
	upload.AllowDirect = true           // the hub reads uploads by sequence
	events := stream(protocol.StreamEvents, protocol.SubjectEventPrefix, "edx decisions of every hub (accepted, status, rejected, unit); each hub's index follows them",
		jetstream.LimitsPolicy, opts.EventsMaxAge, opts.EventsMaxBytes, opts.EventsMaxMsgs)
	events.Discard = jetstream.DiscardOld
	deliverAge := max(opts.DeliverMaxAge, opts.NoticeMaxAge)
	if opts.DeliverMaxAge == 0 || opts.NoticeMaxAge == 0 {
		deliverAge = 0 // until acknowledged
	}
	deliver := stream(protocol.StreamDeliver, protocol.SubjectDeliverPrefix, "edx deliveries and notices, one subject per unit; the hub removes what units acknowledged",
		jetstream.LimitsPolicy, deliverAge, opts.DeliverMaxBytes+opts.NoticeMaxBytes, opts.DeliverMaxMsgs+opts.NoticeMaxMsgs)
	deliver.AllowDirect = true // units that read by cursor get their messages by direct get (Cursors)
	streams := []jetstream.StreamConfig{
		submit,
		deliver,
		status,
		upload,
		events,
	}
	stage := jetstream.ObjectStoreConfig{
		Bucket:      protocol.StageBucket,
		Description: "edx deliveries above the inline limit, encrypted; the hub writes, units read through the hub's stage service",
		// No TTL: an object lives while a waiting delivery names it.
		MaxBytes: opts.StageMaxBytes,
		Storage:  jetstream.FileStorage,
		Replicas: opts.Replicas,
	}
	return streams, stage
}

// EnsureStreams creates the edx streams and the upload stream in the EDX
// account (js, the hub's connection there) and the stage store in the STAGE
// account (stage, the hub's connection there), or updates them to opts. It is
// idempotent and works against the embedded server and an external cluster
// alike (HubConn holds both connections).
func EnsureStreams(ctx context.Context, js, stage jetstream.JetStream, opts StreamOptions) error {
	opts.SetDefaults()
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
	if _, err := migrateUnitStreams(ctx, js, streams[1], opts.Duplicates); err != nil {
		return err
	}
	for _, cfg := range streams {
		if st, err := js.Stream(ctx, cfg.Name); err == nil {
			old := st.CachedInfo().Config
			// A stream's retention cannot change once created: one made by
			// an earlier version keeps its own.
			cfg.Retention = old.Retention
			// Lowering (or setting) a per-subject limit makes the server
			// trim every subject above it at once, even with discard new:
			// in the work queue that would drop submissions not processed
			// yet. Keep the limit above what a unit holds now; a later
			// start lowers it once the backlog is gone.
			if cfg.MaxMsgsPerSubject > 0 && (old.MaxMsgsPerSubject <= 0 || cfg.MaxMsgsPerSubject < old.MaxMsgsPerSubject) {
				held, err := maxPerSubject(ctx, st)
				if err != nil {
					return fmt.Errorf("broker: ensure stream %s: %w", cfg.Name, err)
				}
				cfg.MaxMsgsPerSubject = max(cfg.MaxMsgsPerSubject, held)
			}
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("broker: ensure stream %s: %w (every stream reserves its max_bytes: lower nats.streams.*_max_bytes or give JetStream more room)", cfg.Name, err)
		}
	}
	if _, err := stage.CreateOrUpdateObjectStore(ctx, stageCfg); err != nil {
		return fmt.Errorf("broker: ensure object store %s: %w", stageCfg.Bucket, err)
	}
	return nil
}

// maxPerSubject is the largest number of messages one subject of st holds.
func maxPerSubject(ctx context.Context, st jetstream.Stream) (int64, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n = max(n, c)
	}
	return int64(n), nil
}

// UnitConsumerConfig returns the durable pull consumer of a unit on
// EDX_DELIVER: everything the unit receives, its deliveries and its
// notices, in the order the hub sent them, on the unit's one subject (a
// literal filter: the server finds the unit's next message without looking
// at other units', as it would for several subjects or a wildcard). It has one replica whatever the
// stream's, and its state in memory or in a file as storage says
// (StreamOptions.UnitConsumers): it is only the unit's cursor, and the
// messages stay in the stream until the unit acknowledged them; a cursor
// lost starts again from the oldest message the hub has not removed.
func UnitConsumerConfig(unit, storage string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       protocol.UnitConsumer(unit),
		Description:   "deliveries and notices to " + unit,
		FilterSubject: protocol.DeliverSubject(unit),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       UnitAckWait,
		MaxDeliver:    -1,
		Replicas:      1,
		MemoryStorage: storage != UnitConsumersFile,
		// Tells the unit's agent that notices come here too (an earlier
		// hub's consumer, without it, read deliveries only).
		Metadata: map[string]string{protocol.UnitConsumerMetadata: "true"},
	}
}

// EnsureUnitConsumer creates the durable pull consumer of a unit, or
// replaces one configured otherwise (another storage, the consumers of an
// earlier version): a replaced consumer starts again from the unit's
// oldest message in the stream, which the agent recognises. Units cannot
// create consumers themselves: the hub calls this when it registers a unit,
// and for every unit when it starts (EnsureUnitConsumers). It is idempotent.
func EnsureUnitConsumer(ctx context.Context, js jetstream.JetStream, unit, storage string) error {
	if err := validUnit(unit); err != nil {
		return err
	}
	if storage == UnitConsumersCursor {
		return nil // units read by cursor
	}
	want := UnitConsumerConfig(unit, storage)
	c, err := js.Consumer(ctx, protocol.StreamDeliver, want.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return fmt.Errorf("broker: consumer %s: %w", want.Durable, err)
	case sameUnitConsumer(c.CachedInfo().Config, want):
		return nil
	default:
		if err := js.DeleteConsumer(ctx, protocol.StreamDeliver, want.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("broker: replace consumer %s: %w", want.Durable, err)
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, protocol.StreamDeliver, want); err != nil {
		return fmt.Errorf("broker: ensure consumer %s on %s: %w", want.Durable, protocol.StreamDeliver, err)
	}
	return nil
}

// CreateMissingUnitConsumers gives the units that have no consumer one
// (EnsureUnitConsumer), from a listing of the consumers' names only: a
// tenth of what EnsureUnitConsumers costs for every unit that has one, so
// that a hub can look often for consumers a server forgot. It returns how
// many it created.
func CreateMissingUnitConsumers(ctx context.Context, js jetstream.JetStream, units []string, storage string) (int, error) {
	if storage == UnitConsumersCursor {
		return 0, nil
	}
	st, err := js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return 0, fmt.Errorf("broker: %s: %w", protocol.StreamDeliver, err)
	}
	have := map[string]bool{}
	l := st.ConsumerNames(ctx)
	for name := range l.Name() {
		have[name] = true
	}
	if err := l.Err(); err != nil {
		return 0, fmt.Errorf("broker: list consumers of %s: %w", protocol.StreamDeliver, err)
	}
	n := 0
	var errs []error
	for _, u := range units {
		if have[protocol.UnitConsumer(u)] {
			continue
		}
		if err := EnsureUnitConsumer(ctx, js, u, storage); err != nil {
			errs = append(errs, err)
			if len(errs) > 10 || ctx.Err() != nil {
				break
			}
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// sameUnitConsumer reports whether a unit's consumer as it is (have) is
// configured as want.
func sameUnitConsumer(have, want jetstream.ConsumerConfig) bool {
	return have.FilterSubject == want.FilterSubject && len(have.FilterSubjects) == 0 && have.MemoryStorage == want.MemoryStorage &&
		have.Metadata[protocol.UnitConsumerMetadata] == want.Metadata[protocol.UnitConsumerMetadata] &&
		have.AckPolicy == want.AckPolicy && have.AckWait == want.AckWait && have.DeliverPolicy == want.DeliverPolicy && have.MaxDeliver == want.MaxDeliver
}

// EnsureUnitConsumers makes sure every unit has its consumer: those that
// lack one (a server restarted forgot the consumers kept in memory), have
// one configured otherwise, or one no server leads (its one replica was on
// a server of a cluster that is down) get one (EnsureUnitConsumer); the
// others cost nothing but their share of one listing. It returns how many
// it created. With storage UnitConsumersCursor it deletes the units'
// consumers instead: units read by cursor.
func EnsureUnitConsumers(ctx context.Context, js jetstream.JetStream, units []string, storage string) (int, error) {
	if storage == UnitConsumersCursor {
		return 0, deleteUnitConsumers(ctx, js, units)
	}
	have := map[string]jetstream.ConsumerConfig{}
	st, err := js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return 0, fmt.Errorf("broker: %s: %w", protocol.StreamDeliver, err)
	}
	l := st.ListConsumers(ctx)
	leaderless := map[string]bool{}
	for info := range l.Info() {
		if info.Cluster != nil && info.Cluster.Leader == "" {
			leaderless[info.Name] = true // replaced, on a server that is up
			continue
		}
		have[info.Name] = info.Config
	}
	if err := l.Err(); err != nil {
		return 0, fmt.Errorf("broker: list consumers of %s: %w", protocol.StreamDeliver, err)
	}
	n := 0
	var errs []error
	for _, u := range units {
		want := UnitConsumerConfig(u, storage)
		if cfg, ok := have[want.Durable]; ok && sameUnitConsumer(cfg, want) {
			continue
		}
		if leaderless[want.Durable] {
			// Its info cannot be asked for: deleted through the meta
			// leader, then made again.
			if err := js.DeleteConsumer(ctx, protocol.StreamDeliver, want.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				errs = append(errs, fmt.Errorf("broker: replace consumer %s: %w", want.Durable, err))
				continue
			}
		}
		if err := EnsureUnitConsumer(ctx, js, u, storage); err != nil {
			errs = append(errs, err)
			if len(errs) > 10 || ctx.Err() != nil {
				break
			}
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// deleteUnitConsumers deletes the consumers of units on EDX_DELIVER (an
// agent reading one then asks the hub by cursor).
func deleteUnitConsumers(ctx context.Context, js jetstream.JetStream, units []string) error {
	st, err := js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return fmt.Errorf("broker: %s: %w", protocol.StreamDeliver, err)
	}
	have := map[string]bool{}
	l := st.ConsumerNames(ctx)
	for name := range l.Name() {
		have[name] = true
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("broker: list consumers of %s: %w", protocol.StreamDeliver, err)
	}
	var errs []error
	for _, u := range units {
		if name := protocol.UnitConsumer(u); have[name] {
			if err := js.DeleteConsumer(ctx, protocol.StreamDeliver, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				errs = append(errs, fmt.Errorf("broker: delete consumer %s: %w", name, err))
				if len(errs) > 10 || ctx.Err() != nil {
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Defaults of the consumers every hub shares.
const (
	DefaultHubAckWait       = 30 * time.Second
	DefaultHubMaxAckPending = 256
)

// HubConsumerConfigs returns, by stream, the consumers every hub's pipeline
// shares: on EDX_SUBMIT (the work queue) and on EDX_STATUS. They are
// declared here once; ackWait and maxAckPending (zero takes the defaults)
// are the only settings a configuration chooses, and the first hub to
// create a consumer sets them for every hub (EnsureSharedConsumer).
// maxAckPending bounds the messages out at once across all hubs.
func HubConsumerConfigs(ackWait time.Duration, maxAckPending int) map[string]jetstream.ConsumerConfig {
	if ackWait <= 0 {
		ackWait = DefaultHubAckWait
	}
	if maxAckPending <= 0 {
		maxAckPending = DefaultHubMaxAckPending
	}
	cons := func(name, desc string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{
			Durable:       name,
			Description:   desc,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxDeliver:    -1,
			MaxAckPending: maxAckPending,
		}
	}
	return map[string]jetstream.ConsumerConfig{
		protocol.StreamSubmit: cons(protocol.HubConsumer, "the hub's pipeline, shared by every hub replica"),
		protocol.StreamStatus: cons(protocol.HubStatusConsumer, "the hub's status recorder, shared by every hub replica"),
	}
}

// EnsureSharedConsumer makes sure a consumer every hub shares exists. A
// missing one is created with want. One that exists is used as it is, and
// the settings in which it differs from want are returned (for the caller
// to log): a hub configured differently does not silently change what
// every hub uses. With update, the operator's explicit request, an existing
// consumer is updated to want instead.
func EnsureSharedConsumer(ctx context.Context, js jetstream.JetStream, stream string, want jetstream.ConsumerConfig, update bool) (jetstream.Consumer, []string, error) {
	for attempt := 0; ; attempt++ {
		c, err := js.Consumer(ctx, stream, want.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			c, err = js.CreateConsumer(ctx, stream, want)
			if errors.Is(err, jetstream.ErrConsumerExists) && attempt == 0 {
				continue // another hub created it meanwhile
			}
			if err != nil {
				return nil, nil, fmt.Errorf("broker: create consumer %s on %s: %w", want.Durable, stream, err)
			}
			return c, nil, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("broker: consumer %s on %s: %w", want.Durable, stream, err)
		}
		diff := ConsumerDiff(c.CachedInfo().Config, want)
		if len(diff) == 0 || !update {
			return c, diff, nil
		}
		if c, err = js.UpdateConsumer(ctx, stream, want); err != nil {
			return nil, diff, fmt.Errorf("broker: update consumer %s on %s: %w", want.Durable, stream, err)
		}
		return c, diff, nil
	}
}

// ConsumerDiff lists the settings in which a consumer as it is (have)
// differs from want, as "setting: existing X, configured Y".
func ConsumerDiff(have, want jetstream.ConsumerConfig) []string {
	var d []string
	add := func(name string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			d = append(d, fmt.Sprintf("%s: existing %v, configured %v", name, h, w))
		}
	}
	add("ack_wait", have.AckWait, want.AckWait)
	add("max_ack_pending", have.MaxAckPending, want.MaxAckPending)
	add("max_deliver", have.MaxDeliver, want.MaxDeliver)
	add("ack_policy", have.AckPolicy, want.AckPolicy)
	add("deliver_policy", have.DeliverPolicy, want.DeliverPolicy)
	add("filter_subject", have.FilterSubject, want.FilterSubject)
	add("backoff", have.BackOff, want.BackOff)
	return d
}
