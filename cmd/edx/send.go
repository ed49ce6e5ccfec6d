package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
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
	metaPath := fs.String("meta", "", "document.json")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the hub's notice")
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
	meta, _, data, err := buildContainer(*metaPath, s, fs.Args())
	if err != nil {
		return fail(e, "%v", err)
	}
	doc, err := document.Parse(meta) // valid: Build checked it
	if err != nil {
		return fail(e, "%v", err)
	}
	creds, err := os.ReadFile(*credsPath)
	if err != nil {
		return fail(e, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, js, _, err := connectUnit(ctx, *natsURL, creds, unit)
	if err != nil {
		return fail(e, "%v", err)
	}
	defer nc.Close()
	sum := sha256.Sum256(data)
	wire := &protocol.Container{DocumentID: doc.ID, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data}
	if len(data) > protocol.InlineLimit {
		if err := protocol.UploadStaged(ctx, js, unit, wire); err != nil {
			return fail(e, "stage: %v", err)
		}
	}
	if _, err := js.PublishMsg(ctx, protocol.SubmitMsg(unit, wire)); err != nil {
		return fail(e, "publish: %v", err)
	}
	fmt.Fprintf(e.stdout, "sent %s (%d bytes) from %s; waiting for the hub…\n", doc.ID, len(data), unit)
	n, err := waitNotice(ctx, js, unit, doc.ID)
	if err != nil {
		return fail(e, "%v", err)
	}
	switch n.Type {
	case protocol.NoticeAccepted:
		p := filepath.Join(*receiptDir, string(doc.ID)+".receipt.p7s")
		if err := os.WriteFile(p, n.Receipt, 0o644); err != nil {
			return fail(e, "%v", err)
		}
		fmt.Fprintf(e.stdout, "accepted at %s, archived at %s\nreceipt: %s\n", n.Time.Format(time.RFC3339), n.ArchiveKey, p)
		return exitOK
	default:
		fmt.Fprintf(e.stdout, "REJECTED:\n")
		for _, r := range n.Reasons {
			fmt.Fprintf(e.stdout, "  %s: %s\n", r.Code, r.Message)
		}
		return exitInvalid
	}
}

// waitNotice takes the unit's notices until the one about id arrives;
// notices about other documents are handed back (nak) for the agent.
func waitNotice(ctx context.Context, js jetstream.JetStream, unit document.UnitID, id document.ID) (*protocol.Notice, error) {
	cons, err := js.Consumer(ctx, protocol.StreamNotice, protocol.NoticeConsumer(string(unit)))
	if err != nil {
		return nil, fmt.Errorf("notices: %w", err)
	}
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, errors.New("no answer from the hub in time (the document stays queued; its notice will reach the unit's agent)")
			}
			return nil, fmt.Errorf("notices: %w", err)
		}
		n, err := protocol.ParseNotice(&nats.Msg{Data: msg.Data()})
		if err != nil || n.DocumentID != id || (n.Type != protocol.NoticeAccepted && n.Type != protocol.NoticeRejected) {
			msg.Nak()
			continue
		}
		msg.Ack()
		return n, nil
	}
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
