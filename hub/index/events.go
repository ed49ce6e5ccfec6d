package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// EventsState is where the index stands in the stream of decision events
// (hub/events): the hub's durable consumer, the stream sequence up to which
// every event is applied, and whether the index is complete (false while it
// is rebuilt from the archive). A zero EventsState (Consumer "") is an index
// that has never followed the stream.
type EventsState struct {
	Consumer string
	Seq      uint64
	Complete bool
}

// EventsState returns where the index stands in the events stream.
func (ix *Index) EventsState(ctx context.Context) (EventsState, error) {
	var (
		st  EventsState
		seq int64
	)
	err := ix.w.QueryRowContext(ctx, "SELECT consumer, seq, complete FROM events_state WHERE one = 1").Scan(&st.Consumer, &seq, &st.Complete)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return EventsState{}, nil
	case err != nil:
		return EventsState{}, fmt.Errorf("index: events state: %w", err)
	}
	st.Seq = uint64(seq)
	return st, nil
}

// SetEventsState records where the index stands in the events stream.
func (ix *Index) SetEventsState(ctx context.Context, st EventsState) error {
	if st.Seq > 1<<63-1 {
		return invalid("events state: sequence %d", st.Seq)
	}
	return ix.write(ctx, "events state", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO events_state(one, consumer, seq, complete) VALUES(1, ?, ?, ?)
			ON CONFLICT(one) DO UPDATE SET consumer = excluded.consumer, seq = excluded.seq, complete = excluded.complete`,
			st.Consumer, int64(st.Seq), st.Complete)
		return err
	})
}
