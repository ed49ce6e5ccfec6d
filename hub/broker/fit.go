package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// StoreRoom is what the embedded server's JetStream file store has left to
// reserve: its limit (max_store, or, when not configured, 75% of the free
// disk plus 75% of what its streams hold) less what its streams and
// buckets reserve already.
func (s *Server) StoreRoom() int64 {
	ns := s.server()
	c := ns.JetStreamConfig()
	if c == nil {
		return 0
	}
	_, reserved, err := ns.JetStreamReservedResources()
	if err != nil {
		return 0
	}
	return max(c.MaxStore-reserved, 1)
}

// Fitted is a stream whose default size FitDefaults lowered.
type Fitted struct {
	Option   string // its option, e.g. "deliver_max_bytes"
	From, To int64
}

// FitDefaults lowers the stream sizes still at their defaults so that
// every stream not created yet, with other bytes to reserve besides
// (buckets, the health stream), fits in room, what the JetStream store has
// left to reserve. JetStream reserves each
// stream's max_bytes when it creates it, and an embedded server's store is
// 75% of the free disk: the defaults (some 12 GiB) must not keep a hub on a
// small disk from starting. What an operator set is kept, and so is the
// size of a stream that exists already (lowering max_bytes would trim it).
// The per-unit shares still at their defaults shrink with their streams.
// An error says how much store the streams need at least. With room zero
// (a server whose store is not known, an external cluster) nothing is
// lowered, but existing streams still keep their sizes: a hub whose
// options are at their defaults never resizes the streams another hub or
// an operator sized.
func FitDefaults(ctx context.Context, js, stage jetstream.JetStream, o *StreamOptions, room, other int64) ([]Fitted, error) {
	o.SetDefaults()
	type field struct {
		option, stream string
		js             jetstream.JetStream
		v              *int64
		def, floor     int64
	}
	msg := int64(o.MaxMsgSize)
	// EDX_DELIVER holds deliveries and notices: its size is the sum of
	// deliver_max_bytes and notice_max_bytes. Before an earlier version's
	// EDX_DELIVER and EDX_NOTICE are migrated, each keeps its own size;
	// after, a combined stream left at the defaults keeps its size, split
	// as the defaults are.
	deliver, err := js.Stream(ctx, protocol.StreamDeliver)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("broker: streams: %s: %w", protocol.StreamDeliver, err)
	}
	combined := err == nil && deliver.CachedInfo().Config.Retention == jetstream.LimitsPolicy
	noticeStream := protocol.LegacyStreamNotice
	if combined {
		noticeStream = protocol.StreamDeliver
	}
	fields := []field{
		{"submit_max_bytes", protocol.StreamSubmit, js, &o.SubmitMaxBytes, DefaultSubmitMaxBytes, 4 * msg},
		{"deliver_max_bytes", protocol.StreamDeliver, js, &o.DeliverMaxBytes, DefaultDeliverMaxBytes, 4 * msg},
		{"notice_max_bytes", noticeStream, js, &o.NoticeMaxBytes, DefaultNoticeMaxBytes, 2 * msg},
		{"status_max_bytes", protocol.StreamStatus, js, &o.StatusMaxBytes, DefaultStatusMaxBytes, 2 * statusMsgSize},
		{"upload_max_bytes", protocol.StreamUpload, js, &o.UploadMaxBytes, DefaultUploadMaxBytes, 4 * protocol.MaxUploadMsgSize},
		{"stage_max_bytes", protocol.StageStream, stage, &o.StageMaxBytes, DefaultStageMaxBytes, 2 * msg},
		{"events_max_bytes", protocol.StreamEvents, js, &o.EventsMaxBytes, DefaultEventsMaxBytes, 2 * msg},
	}
	replicas := int64(max(o.Replicas, 1))
	var fixed, want, floors int64
	var scalable []field
	for _, f := range fields {
		st, err := f.js.Stream(ctx, f.stream)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("broker: streams: %s: %w", f.stream, err)
		}
		exists := err == nil
		switch {
		case exists && combined && f.stream == protocol.StreamDeliver:
			// Both shares of the combined EDX_DELIVER: left at the
			// defaults, it keeps its size, split as the defaults are.
			if f.option == "deliver_max_bytes" && o.DeliverMaxBytes == DefaultDeliverMaxBytes && o.NoticeMaxBytes == DefaultNoticeMaxBytes {
				have := st.CachedInfo().Config.MaxBytes
				o.NoticeMaxBytes = int64(float64(have) * float64(DefaultNoticeMaxBytes) / float64(DefaultDeliverMaxBytes+DefaultNoticeMaxBytes))
				o.DeliverMaxBytes = have - o.NoticeMaxBytes
			}
			continue
		case exists && *f.v == f.def:
			*f.v = st.CachedInfo().Config.MaxBytes // kept as it is, reserved already
			continue
		case exists:
			continue // resized as configured (reserved already, up to its old size)
		case *f.v != f.def:
			fixed += *f.v // to reserve, as configured
			continue
		}
		scalable = append(scalable, f)
		want += f.def
		floors += f.floor
	}
	budget := room/replicas*9/10 - other - fixed // a tenth left for the store's own overhead
	var out []Fitted
	if room > 0 && want > budget {
		if hard := room/replicas - other - fixed; floors > hard {
			return nil, fmt.Errorf("broker: streams: JetStream has %d MiB of store left to reserve (75%% of the free disk unless max_store is set); "+
				"the streams need at least %d MiB more: free some disk or set nats.streams.*_max_bytes", room>>20, (floors-hard)>>20+1)
		}
		budget = max(budget, floors)
		for _, f := range scalable {
			to := max(f.floor, int64(float64(f.def)*float64(budget)/float64(want))&^(1<<20-1))
			*f.v = to
			out = append(out, Fitted{Option: f.option, From: f.def, To: to})
		}
	}
	// The per-unit shares left at their defaults follow their streams.
	if o.SubmitUnitPending == DefaultSubmitUnitPending && o.SubmitUnitPending*msg > o.SubmitMaxBytes/2 {
		o.SubmitUnitPending = max(1, o.SubmitMaxBytes/2/msg)
		out = append(out, Fitted{Option: "submit_unit_pending", From: DefaultSubmitUnitPending, To: o.SubmitUnitPending})
	}
	if o.StatusUnitPending == DefaultStatusUnitPending && o.StatusUnitPending*statusMsgSize > o.StatusMaxBytes/2 {
		o.StatusUnitPending = max(1, o.StatusMaxBytes/2/statusMsgSize)
		out = append(out, Fitted{Option: "status_unit_pending", From: DefaultStatusUnitPending, To: o.StatusUnitPending})
	}
	if o.UploadUnitQuota == DefaultUploadUnitQuota && o.UploadUnitQuota > o.UploadMaxBytes/2 {
		o.UploadUnitQuota = max(protocol.MaxUploadMsgSize, o.UploadMaxBytes/2)
		out = append(out, Fitted{Option: "upload_unit_quota", From: DefaultUploadUnitQuota, To: o.UploadUnitQuota})
	}
	return out, o.Validate()
}
