package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

func init() {
	register(command{"send", "sign and send one document to the hub, and wait for its notice", cmdSend})
	register(command{"get", "download a document's container and receipt from the hub", cmdGet})
}

func cmdSend(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "send", "--nats URL --creds F --key K --cert C --meta doc.json FILE...")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "the hub's NATS URL")
	credsPath := fs.String("creds", "", "the unit's NATS credentials (from edx unit add)")
	keyPath := fs.String("key", "", "the unit's private key (PEM)")
	certPath := fs.String("cert", "", "the unit's certificate and chain (PEM)")
	metaPath := fs.String("meta", "", "document.json; a missing id is filled with a new one (printed), a missing from with the certificate's unit")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the hub's answer")
	receiptDir := fs.String("receipt-dir", ".", "where to save the hub's receipt")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *credsPath == "" || *keyPath == "" || *certPath == "" || *metaPath == "" || fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	s, err := pki.LoadSigner(*keyPath, *certPath)
	if err != nil {
		return fail(e, "%v", err)
	}
	unit, err := pki.UnitOf(s.Cert())
	if err != nil {
		return fail(e, "%v", err)
	}
	b, err := buildContainer(*metaPath, s, fs.Args())
	if err != nil {
		return fail(e, "%v", err)
	}
	doc, data, filled := b.doc, b.data, b.filled
	if filled {
		fmt.Fprintf(e.stdout, "document id %s (filled in: %s has none)\n", doc.ID, *metaPath)
	}
	creds, err := os.ReadFile(*credsPath)
	if err != nil {
		return fail(e, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// Permission violations come asynchronously: they end the wait at once.
	refused := make(chan error, 8)
	cctx, ccancel := context.WithTimeout(ctx, connectTimeout)
	nc, js, _, err := connectUnit(cctx, *natsURL, creds, unit, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if !refusal(err) {
			return
		}
		select {
		case refused <- err:
		default:
		}
	}))
	ccancel()
	if err != nil {
		return fail(e, "%s", explainConnect(err, *natsURL, *credsPath, *certPath, unit))
	}
	defer nc.Close()
	// The hub sends the decision to this client's own inbox too: the unit's
	// notices are its agent's to read, and the agent may be running.
	answers := make(chan *nats.Msg, 4)
	inbox := nc.NewInbox()
	if _, err := nc.ChanSubscribe(inbox, answers); err != nil {
		return fail(e, "subscribe %s: %v", inbox, err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fail(e, "%s", explainWait(err, *natsURL, unit, *credsPath))
	}
	sum := sha256.Sum256(data)
	wire := &protocol.Container{DocumentID: doc.ID, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data}
	if len(data) > protocol.InlineLimit {
		if err := protocol.UploadStaged(ctx, js, unit, wire); err != nil {
			return fail(e, "stage: %s", explainWait(err, *natsURL, unit, *credsPath))
		}
	}
	m := protocol.SubmitMsg(unit, wire)
	m.Header.Set(protocol.HeaderNoticeTo, inbox)
	ack, err := publish(ctx, js, m, refused)
	if err != nil {
		return fail(e, "publish: %s", explainWait(err, *natsURL, unit, *credsPath))
	}
	if ack.Duplicate {
		return fail(e, "the hub already had this exact container of %s (sent moments ago): its answer went to the first sender; see edx get %s", doc.ID, doc.ID)
	}
	fmt.Fprintf(e.stdout, "sent %s (%d bytes) from %s; waiting for the hub…\n", doc.ID, len(data), unit)
	n, err := waitDecision(ctx, answers, refused, doc.ID)
	if err != nil {
		return fail(e, "%s", explainWait(err, *natsURL, unit, *credsPath))
	}
	switch n.Type {
	case protocol.NoticeAccepted:
		p := filepath.Join(*receiptDir, string(doc.ID)+".receipt.p7s")
		if err := os.WriteFile(p, n.Receipt, 0o644); err != nil {
			return fail(e, "%v", err)
		}
		fmt.Fprintf(e.stdout, "accepted at %s, archived at %s\nreceipt: %s\n", showTime(n.Time), n.ArchiveKey, p)
		return exitOK
	default:
		fmt.Fprintf(e.stdout, "REJECTED:\n")
		for _, r := range n.Reasons {
			fmt.Fprintf(e.stdout, "  %s: %s\n", r.Code, r.Message)
			if r.Code == reason.DocumentConflict && !filled {
				fmt.Fprintf(e.stdout, "  → the id %s in %s was already used for another document (a template sent twice?):\n"+
					"    remove its \"id\" line (edx send then fills a new one) or start again from edx template\n", doc.ID, *metaPath)
			}
		}
		return exitInvalid
	}
}

// connectTimeout bounds connecting, credentials check included: a hub that
// is down or credentials that are refused are reported within seconds.
const connectTimeout = 15 * time.Second

// publish publishes a submission and waits for the stream's ack, or for the
// server to refuse it (a permission violation, which NATS reports
// asynchronously and which would otherwise leave the ack to time out).
func publish(ctx context.Context, js jetstream.JetStream, m *nats.Msg, refused <-chan error) (*jetstream.PubAck, error) {
	f, err := js.PublishMsgAsync(m)
	if err != nil {
		return nil, err
	}
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case err := <-refused:
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitDecision waits for the hub's decision on id at the client's inbox.
func waitDecision(ctx context.Context, answers <-chan *nats.Msg, refused <-chan error, id document.ID) (*protocol.Notice, error) {
	for {
		select {
		case m := <-answers:
			n, err := protocol.ParseNotice(m)
			if err != nil || n.DocumentID != id || (n.Type != protocol.NoticeAccepted && n.Type != protocol.NoticeRejected) {
				continue
			}
			return n, nil
		case err := <-refused:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// refusal reports whether an asynchronous error from NATS means that the
// server refuses what this client does: waiting longer will not help.
func refusal(err error) bool {
	for _, e := range []error{nats.ErrPermissionViolation, nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// explainConnect turns a connection failure into what happened and what to
// do.
func explainConnect(err error, url, credsPath, certPath string, unit document.UnitID) string {
	var ce *protocol.ConnectError
	if !errors.As(err, &ce) {
		return err.Error()
	}
	switch {
	case ce.Kind == protocol.ErrUnreachable:
		return fmt.Sprintf("cannot reach NATS at %s (%s): is the hub running? (edx-hub prints its NATS URL and writes it to DATA/hub.json; pass it with --nats)", url, ce.Reason)
	case ce.Local && strings.HasPrefix(ce.Reason, "issued for unit"):
		return fmt.Sprintf("the credentials in %s cannot connect unit %s (the unit of --cert %s): they were %s; use that unit's nats.creds (edx unit add writes it beside its key)", credsPath, unit, certPath, ce.Reason)
	case ce.Local:
		return fmt.Sprintf("the credentials in %s cannot connect unit %s (%s): check --creds (edx unit add writes them)", credsPath, unit, ce.Reason)
	default:
		return fmt.Sprintf("NATS refused the credentials for unit %s (%s): check --creds %s (edx unit add writes them; they may have expired or been revoked, or belong to another hub)", unit, ce.Reason, credsPath)
	}
}

// shareFull is how the server refuses a publish beyond the unit's share of
// a stream (nats.streams.submit_unit_pending, upload_unit_quota).
const shareFull = "maximum messages per subject exceeded"

// explainWait turns a failure after connecting into what happened.
func explainWait(err error, url string, unit document.UnitID, credsPath string) string {
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Sprintf("NATS refused an operation for unit %s (%v): the credentials in %s do not allow it; check --creds", unit, err, credsPath)
	case refusal(err):
		return fmt.Sprintf("NATS refused the credentials for unit %s (%v): check --creds %s (they may have expired or been revoked)", unit, err, credsPath)
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer from the hub in time (the document stays queued; its notice will reach the unit's agent); raise --timeout to wait longer"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrNoResponders):
		return fmt.Sprintf("lost NATS at %s (%v): is the hub running?", url, err)
	case strings.Contains(err.Error(), shareFull):
		return fmt.Sprintf("the hub holds as many submissions or uploads of unit %s as it takes at once (%v): they are being processed; send again in a moment", unit, err)
	}
	return err.Error()
}

func cmdGet(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "get", "ID [-o DIR] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	out := fs.String("o", ".", "output directory")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	id, err := document.ParseID(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fail(e, "%v", err)
	}
	for _, part := range []struct{ path, file string }{
		{"/container", string(id) + ".asice"},
		{"/receipt", string(id) + ".receipt.p7s"},
	} {
		var b []byte
		if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id)+part.path, nil, &b); err != nil {
			return fail(e, "%v", err)
		}
		p := filepath.Join(*out, part.file)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fail(e, "%v", err)
		}
		fmt.Fprintf(e.stdout, "%s (%d bytes)\n", p, len(b))
	}
	fmt.Fprintf(e.stdout, "verify: edx verify --trust roots.pem --receipt %s %s\n",
		filepath.Join(*out, string(id)+".receipt.p7s"), filepath.Join(*out, string(id)+".asice"))
	return exitOK
}
