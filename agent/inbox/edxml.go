package inbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

// EdXMLID is the edXML DocumentId of d: its edxml_id (kept from the packet
// it came from), or as edXML forms it ({from},{yyyy/MM/dd},{number}/
// {notation}).
func EdXMLID(d *document.Document) string {
	if d.EdXMLID != "" {
		return d.EdXMLID
	}
	return edxml.DocumentID(d)
}

// WritePacket writes a received document as the edXML packet its
// recipient's document system reads: written again from the signed
// document.json and files (edxml_extra puts back every element of a packet
// the sender's document system wrote), with one TraceHeader added for the
// hop through edx (the sending unit and the time the hub accepted the
// document, from its signed receipt), as an axis adds one per hop. The
// packet the sender's document system wrote, when it sent one, stays in the
// container as files/original.edxml, byte for byte; it is not an
// attachment of the packet written here.
func WritePacket(w io.Writer, c *container.Container, acceptedAt time.Time) error {
	d := *c.Meta
	d.EdXMLExtra = append([]document.EdXMLExtra(nil), c.Meta.EdXMLExtra...)
	edxml.AddTrace(&d, d.From, acceptedAt)
	var files []edxml.File
	for _, e := range c.Files() {
		name := strings.TrimPrefix(e.Name, container.FilesDir)
		if name == edxml.OriginalFile {
			continue
		}
		files = append(files, edxml.File{Name: name, Open: e.Open})
	}
	return edxml.Write(w, &d, files)
}

// packetError is a document that cannot be written as a packet (as opposed
// to a failing disk).
type packetError struct{ error }

// writePacket adds PacketFile to a folder being written. A document that
// cannot be written in edXML (its document.json does not fit the format)
// is stored without it, and logged: the document is there all the same.
func (s *Store) writePacket(f *durable.Folder, r Received) error {
	pr, pw := io.Pipe()
	go func() {
		err := WritePacket(pw, r.Container, r.Body.AcceptedAt)
		if err != nil {
			err = packetError{err}
		}
		pw.CloseWithError(err)
	}()
	err := f.WriteFrom(PacketFile, pr, 0o640)
	pr.CloseWithError(errors.New("inbox: packet not read"))
	var pe packetError
	if errors.As(err, &pe) {
		s.log.Warn("inbox: document stored without its edXML packet", "doc_id", r.Container.Meta.ID, "err", pe.error)
		os.Remove(filepath.Join(f.Dir, PacketFile))
		return nil
	}
	return err
}

// WritePacketOf writes a received document as an edXML packet (see
// WritePacket), from the container in its folder, checked against the
// digest recorded when it arrived.
func (s *Store) WritePacketOf(ctx context.Context, w io.Writer, id document.ID) error {
	it, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	c, err := s.openContainer(ctx, it)
	if err != nil {
		return err
	}
	if err := WritePacket(w, c, it.AcceptedAt); err != nil {
		return fmt.Errorf("inbox: packet of %s: %w", id, err)
	}
	return nil
}

// openContainer reads a received document's container from its folder;
// one that is gone or was changed is ErrGone.
func (s *Store) openContainer(ctx context.Context, it *Item) (*container.Container, error) {
	p, err := s.ContainerPath(ctx, it.ID)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrGone, it.ID, err)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != it.SHA256 {
		return nil, fmt.Errorf("%w: %s: its container was changed in the folder", ErrGone, it.ID)
	}
	lim := container.DefaultLimits
	lim.MaxSize = max(lim.MaxSize, int64(len(raw)))
	c, err := container.Open(raw, lim)
	if err != nil {
		return nil, fmt.Errorf("inbox: %s: %w", it.ID, err)
	}
	return c, nil
}

// Meta returns a received document's metadata.
func (s *Store) Meta(ctx context.Context, id document.ID) (*document.Document, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return &it.Meta, nil
}

// FindEdXML returns the document received last whose edXML DocumentId is
// edxmlID, or ErrNotFound.
func (s *Store) FindEdXML(ctx context.Context, edxmlID string) (*Item, error) {
	var id document.ID
	err := s.db.QueryRowContext(ctx, `SELECT id FROM documents WHERE edxml_id = ? AND edxml_id != '' ORDER BY seq DESC LIMIT 1`, edxmlID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: edXML DocumentId %q", ErrNotFound, edxmlID)
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: find %q: %w", edxmlID, err)
	}
	return s.Get(ctx, id)
}

// Transport statuses the document system reports (HandOver).
const (
	TransportDone       = "done"
	TransportFail       = "fail"
	TransportProcessing = "processing"
)

func checkTransport(t string) error {
	switch t {
	case TransportDone, TransportFail, TransportProcessing:
		return nil
	}
	return fmt.Errorf("inbox: transport status %q: want done, fail or processing", t)
}

// NotHandedOver returns up to limit documents the document system has not
// taken yet (HandOver done), oldest first, without their statuses.
func (s *Store) NotHandedOver(ctx context.Context, limit int) ([]*Item, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+itemCols+` FROM documents WHERE handed_over_at IS NULL ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: list: %w", err)
	}
	defer rows.Close()
	out := []*Item{}
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("inbox: list: %w", err)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// HandOver records the document system's last acknowledgement of a
// document: done (taken: not listed by NotHandedOver again), or fail or
// processing (listed again).
func (s *Store) HandOver(ctx context.Context, id document.ID, transport string) error {
	if err := checkTransport(transport); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE documents SET transport = ?1,
		handed_over_at = CASE WHEN ?1 = 'done' THEN coalesce(handed_over_at, ?2) ELSE NULL END WHERE id = ?3`,
		transport, s.now().UnixNano(), id)
	if err != nil {
		return fmt.Errorf("inbox: hand over %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return nil
}

// SenderStatus is a status the sender of a received document reported on
// it (13: it takes the document back), as the hub passed it on.
type SenderStatus struct {
	Seq int64 `json:"seq"`
	document.Status
	ReceivedAt   time.Time  `json:"received_at"`
	HandedOverAt *time.Time `json:"handed_over_at,omitempty"`
	Transport    string     `json:"transport,omitempty"`
}

// ErrNotSender: a status on a received document from a unit other than
// its sender.
var ErrNotSender = errors.New("inbox: the status is not from the document's sender")

// AddSenderStatus records a status the sender of a received document
// reported on it; it reports false for one recorded before.
func (s *Store) AddSenderStatus(ctx context.Context, st document.Status) (*SenderStatus, bool, error) {
	if err := st.Validate(); err != nil {
		return nil, false, fmt.Errorf("inbox: sender's status: %w", err)
	}
	it, err := s.Get(ctx, st.DocumentID)
	if err != nil {
		return nil, false, err
	}
	if it.From != st.Unit {
		return nil, false, fmt.Errorf("%w: %s reported on %s, sent by %s", ErrNotSender, st.Unit, st.DocumentID, it.From)
	}
	body, _ := json.Marshal(st)
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO sender_statuses (id, unit, code, time, body, received_at) VALUES (?, ?, ?, ?, ?, ?)`,
		st.DocumentID, st.Unit, st.Code, st.Time.UnixNano(), string(body), s.now().UnixNano())
	if err != nil {
		return nil, false, fmt.Errorf("inbox: sender's status %s: %w", st.DocumentID, err)
	}
	n, _ := res.RowsAffected()
	sts, err := s.senderStatuses(ctx, `WHERE id = ? AND unit = ? AND code = ? AND time = ?`, st.DocumentID, st.Unit, st.Code, st.Time.UnixNano())
	if err != nil || len(sts) == 0 {
		return nil, false, fmt.Errorf("inbox: sender's status %s: %v", st.DocumentID, err)
	}
	return sts[0], n > 0, nil
}

const senderStatusCols = `seq, body, received_at, handed_over_at, transport`

func (s *Store) senderStatuses(ctx context.Context, where string, args ...any) ([]*SenderStatus, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+senderStatusCols+` FROM sender_statuses `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("inbox: senders' statuses: %w", err)
	}
	defer rows.Close()
	var out []*SenderStatus
	for rows.Next() {
		var st SenderStatus
		var body string
		var recv int64
		var handed sql.NullInt64
		if err := rows.Scan(&st.Seq, &body, &recv, &handed, &st.Transport); err != nil {
			return nil, fmt.Errorf("inbox: senders' statuses: %w", err)
		}
		if err := json.Unmarshal([]byte(body), &st.Status); err != nil {
			return nil, fmt.Errorf("inbox: senders' statuses: %w", err)
		}
		st.ReceivedAt = time.Unix(0, recv).UTC()
		if handed.Valid {
			t := time.Unix(0, handed.Int64).UTC()
			st.HandedOverAt = &t
		}
		out = append(out, &st)
	}
	return out, rows.Err()
}

// SenderStatus returns a sender's status by its number, or ErrNotFound.
func (s *Store) SenderStatus(ctx context.Context, id document.ID, seq int64) (*SenderStatus, error) {
	sts, err := s.senderStatuses(ctx, `WHERE id = ? AND seq = ?`, id, seq)
	if err != nil {
		return nil, err
	}
	if len(sts) == 0 {
		return nil, fmt.Errorf("%w: %s has no sender's status %d", ErrNotFound, id, seq)
	}
	return sts[0], nil
}

// SenderStatusesNotHandedOver returns up to limit senders' statuses the
// document system has not taken yet, oldest first.
func (s *Store) SenderStatusesNotHandedOver(ctx context.Context, limit int) ([]*SenderStatus, error) {
	sts, err := s.senderStatuses(ctx, `WHERE handed_over_at IS NULL ORDER BY seq LIMIT ?`, limit)
	if sts == nil && err == nil {
		sts = []*SenderStatus{}
	}
	return sts, err
}

// HandOverSenderStatus records the document system's last acknowledgement
// of a sender's status (see HandOver).
func (s *Store) HandOverSenderStatus(ctx context.Context, id document.ID, seq int64, transport string) error {
	if err := checkTransport(transport); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE sender_statuses SET transport = ?1,
		handed_over_at = CASE WHEN ?1 = 'done' THEN coalesce(handed_over_at, ?2) ELSE NULL END WHERE id = ?3 AND seq = ?4`,
		transport, s.now().UnixNano(), id, seq)
	if err != nil {
		return fmt.Errorf("inbox: hand over %s/%d: %w", id, seq, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %s has no sender's status %d", ErrNotFound, id, seq)
	}
	return nil
}

// QueueTakeBack queues the unit's own 13 (it takes back a document it
// sent) with the statuses it reports, to be sent to the hub in order. The
// caller checks that the unit sent the document.
func (s *Store) QueueTakeBack(ctx context.Context, st document.Status) (*Status, error) {
	if st.Code != document.StatusCancelled {
		return nil, document.Problems{{Field: "code", Message: fmt.Sprintf("%s is not the sender's code (13)", st.Code)}}
	}
	if err := st.Validate(); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(st)
	res, err := s.db.ExecContext(ctx, `INSERT INTO statuses (id, code, time, body, state) VALUES (?, ?, ?, ?, ?)`,
		st.DocumentID, st.Code, st.Time.UnixNano(), string(body), StatusPending)
	if err != nil {
		return nil, fmt.Errorf("inbox: take back %s: %w", st.DocumentID, err)
	}
	seq, _ := res.LastInsertId()
	return &Status{Seq: seq, Status: st, State: StatusPending}, nil
}

// QueuedStatus returns a status the unit queued, by its number, or
// ErrNotFound.
func (s *Store) QueuedStatus(ctx context.Context, seq int64) (*Status, error) {
	sts, err := s.statuses(ctx, `WHERE seq = ?`, seq)
	if err != nil {
		return nil, err
	}
	if len(sts) == 0 {
		return nil, fmt.Errorf("%w: status %d", ErrNotFound, seq)
	}
	return sts[0], nil
}

// Senders returns the units the inbox received documents from, with the
// name the latest document gives each.
func (s *Store) Senders(ctx context.Context) (map[document.UnitID]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT d.sender, d.meta FROM documents d
		JOIN (SELECT max(seq) AS m FROM documents GROUP BY sender) x ON d.seq = x.m`)
	if err != nil {
		return nil, fmt.Errorf("inbox: senders: %w", err)
	}
	defer rows.Close()
	out := map[document.UnitID]string{}
	for rows.Next() {
		var u document.UnitID
		var meta []byte
		if err := rows.Scan(&u, &meta); err != nil {
			return nil, fmt.Errorf("inbox: senders: %w", err)
		}
		var d struct {
			FromName string `json:"from_name"`
		}
		json.NewDecoder(bytes.NewReader(meta)).Decode(&d)
		out[u] = d.FromName
	}
	return out, rows.Err()
}
