package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/pki"
)

// What a failed start says: each error names what is wrong, the
// configuration key at fault and what to do, since an operator reads it
// with nothing else (the hub is not running).

// readCreds reads one of the hub's NATS credential files (key names it).
func readCreds(key, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats: %s %s: %w; `edx-hub nats-config --keys KEYS_DIR --out DIR` writes the hub's credentials (hub.creds, hub-stage.creds)",
			key, path, unwrapPathError(err))
	}
	return b, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// natsConnectError explains a failed connection to an external cluster.
func (h *Hub) natsConnectError(err error, what string) error {
	c := h.cfg.NATS
	switch {
	case errors.Is(err, nats.ErrNoServers) || isRefused(err):
		return fmt.Errorf("nats: cannot reach %s (nats.url): %w; is the NATS cluster running and listening there?", c.URL, err)
	case errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrTimeout) || isTimeout(err):
		op := "?"
		if h.keys != nil {
			op = h.keys.Operator()
		}
		return fmt.Errorf("nats: the servers at %s refuse the hub's %s (or do not answer them): %w; the servers must trust the operator of "+
			"nats.keys_dir %s (operator %s) with the accounts and resolver that `edx-hub nats-config --keys %s` prints, and "+
			"nats.creds_file and nats.stage_creds_file must be the credentials it wrote", c.URL, what, err, c.KeysDir, op, c.KeysDir)
	}
	return fmt.Errorf("nats: connect to %s (%s): %w", c.URL, what, err)
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// checkKeys compares the hub's keys directory with its credentials and with
// the accounts the cluster's resolver holds: every hub of a cluster signs
// unit credentials and pushes the UNITS account's revocations with the same
// keys, so a hub with keys of its own would issue credentials the servers
// refuse, or push an account that no longer trusts the others' units.
func (h *Hub) checkKeys(ctx context.Context, creds, stageCreds []byte) error {
	c := h.cfg.NATS
	copyHint := fmt.Sprintf("every hub of a cluster needs the same keys: copy the keys directory of the hub where `edx-hub nats-config` ran "+
		"to nats.keys_dir (%s) on this hub", c.KeysDir)
	for _, f := range []struct {
		key, path string
		creds     []byte
		want      string
	}{
		{"creds_file", c.CredsFile, creds, h.keys.Account()},
		{"stage_creds_file", c.StageCredsFile, stageCreds, h.keys.StageAccount()},
	} {
		acc, err := broker.CredsAccount(f.creds)
		if err != nil {
			return fmt.Errorf("nats: %s %s: %w", f.key, f.path, err)
		}
		if acc != f.want {
			return fmt.Errorf("nats: %s %s is a user of account %s, but nats.keys_dir %s holds account %s: the credentials and the keys are not of the same operator; %s",
				f.key, f.path, acc, c.KeysDir, f.want, copyHint)
		}
	}
	return nil
}

// checkResolverAccounts compares the accounts the cluster's full resolver
// holds with the keys directory's: same signing keys. With a MEMORY
// resolver there is nothing to ask; the check is skipped.
func (h *Hub) checkResolverAccounts(ctx context.Context) error {
	c := h.cfg.NATS
	for _, a := range []struct{ name, pub, signing string }{
		{broker.AccountName, h.keys.Account(), h.keys.AccountSigningKey()},
		{broker.UnitsAccountName, h.keys.UnitsAccount(), h.keys.UnitsSigningKey()},
		{broker.StageAccountName, h.keys.StageAccount(), h.keys.StageSigningKey()},
	} {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		keys, err := h.sys.AccountSigningKeys(lctx, a.pub)
		cancel()
		switch {
		case errors.Is(err, broker.ErrNoResolver):
			h.log.Warn("nats: the servers do not answer account lookups (a MEMORY resolver?): the hub cannot check that its keys are the cluster's", "err", err)
			return nil
		case errors.Is(err, broker.ErrAccountNotStored):
			continue // pushed below
		case err != nil:
			return fmt.Errorf("nats: look up account %s in the cluster's resolver: %w", a.name, err)
		}
		if !slicesContains(keys, a.signing) {
			return fmt.Errorf("nats: the cluster's %s account (in its resolver) has signing key %s, but nats.keys_dir %s has %s: this hub's keys are not the cluster's "+
				"(a seed missing from the copy was made anew, or another hub's keys); every hub of a cluster needs the same keys: copy the keys directory of the hub "+
				"where `edx-hub nats-config` ran to nats.keys_dir on this hub",
				a.name, strings.Join(keys, ", "), c.KeysDir, a.signing)
		}
	}
	return nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// checkMaxPayload: the servers must take the largest message the streams
// hold and units send.
func (h *Hub) checkMaxPayload() error {
	need := max(int64(h.cfg.NATS.Streams.MaxMsgSize), h.cfg.NATS.Units.MaxPayload)
	if mp := h.nc.MaxPayload(); mp > 0 && mp < need {
		return fmt.Errorf("nats: the servers' max_payload is %d bytes, below the %d the hub needs (nats.streams.max_msg_size %d, nats.units.max_payload %d): "+
			"set max_payload: %d in every server's configuration (edx-hub nats-config prints it) and restart them",
			mp, need, h.cfg.NATS.Streams.MaxMsgSize, h.cfg.NATS.Units.MaxPayload, need)
	}
	return nil
}

// s3Error explains a failed start of the archive.
func (h *Hub) s3Error(err error) error {
	c := h.cfg.S3.Archive
	var resp minio.ErrorResponse
	switch {
	case errors.As(err, &resp) && (resp.Code == "SignatureDoesNotMatch" || resp.Code == "InvalidAccessKeyId" ||
		resp.Code == "AccessDenied" || resp.Code == "InvalidSecretKeyId"):
		return fmt.Errorf("s3: the server at %s refuses the hub's credentials: %w; check s3.access_key (or access_key_file, %s) and "+
			"s3.secret_key_file (or %s)", c.Endpoint, err, archive.EnvAccessKey, archive.EnvSecretKey)
	case errors.Is(err, archive.ErrUnavailable) && (isRefused(err) || isTimeout(err) || isDNS(err)):
		return fmt.Errorf("s3: cannot reach %s (s3.endpoint): %w; is the S3 server running and listening there (s3.use_ssl for https)?", c.Endpoint, err)
	}
	return fmt.Errorf("s3: %s (s3.endpoint, bucket %s): %w", c.Endpoint, c.Bucket, err)
}

func isDNS(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de)
}

// listenError explains an HTTP address the hub cannot listen on.
func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("http: listen %s (http.listen): address already in use: another program (another hub?) listens there; "+
			"give this hub another address (http.listen or -http)", addr)
	}
	return fmt.Errorf("http: listen %s (http.listen): %w", addr, err)
}

// loadIssuingCA loads pki.issuing_ca and checks that what it issues is
// trusted: its certificate must chain to pki.trust.
func loadIssuingCA(c IssuingCAConfig, trust *pki.Trust) (*pki.Issuer, error) {
	iss, err := pki.LoadIssuer(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("pki.issuing_ca: %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range iss.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := iss.Cert.Verify(x509.VerifyOptions{Roots: trust.Roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("pki.issuing_ca: %s (%s) does not chain to the trust roots of pki.trust: %w; the hub would issue certificates "+
			"that it and the agents refuse", c.Cert, iss.Cert.Subject.CommonName, err)
	}
	if !iss.Cert.IsCA || iss.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki.issuing_ca: %s is not a CA certificate (basic constraints CA, key usage certSign)", c.Cert)
	}
	return iss, nil
}

// ensureStreams creates or updates the streams, waiting while the cluster
// is not ready: servers started together elect their meta leader a few
// seconds after they accept clients, and a hub started with them must not
// give up then.
func (h *Hub) ensureStreams(ctx context.Context) error {
	// The embedded server's store is 75% of the free disk: the default
	// stream sizes shrink to fit it (set nats.streams.* to choose). On any
	// server, a stream that exists keeps its size unless configured.
	var room int64
	if h.nats != nil {
		room = h.nats.StoreRoom()
	}
	b := h.cfg.NATS.Buckets
	other := 3*b.MaxBytes*int64(max(b.Replicas, 1)) + healthMaxBytes
	fitted, err := broker.FitDefaults(ctx, h.conn.JS, h.conn.StageJS, &h.cfg.NATS.Streams, room, other)
	if err != nil && !broker.NotReady(err) {
		return err
	}
	for _, f := range fitted {
		h.log.Warn("nats: the embedded JetStream store is smaller than the default streams need: a default lowered to fit (set it in nats.streams to choose)",
			"option", f.Option, "default", f.From, "now", f.To, "store_room_mib", room>>20)
	}
	deadline := time.Now().Add(broker.StartWait)
	for {
		// An earlier version's EDX_DELIVER and EDX_NOTICE move into the
		// new EDX_DELIVER (EnsureStreams would do it too, silently).
		m, err := broker.MigrateUnitStreams(ctx, h.conn.JS, h.cfg.NATS.Streams)
		if m.Held > 0 || m.Copied > 0 {
			h.log.Warn("nats: deliveries and notices moved into the one EDX_DELIVER each unit reads with one consumer (from EDX_DELIVER and EDX_NOTICE of an earlier version)",
				"held", m.Held, "copied", m.Copied, "err", err)
		}
		if err == nil {
			err = broker.EnsureStreams(ctx, h.conn.JS, h.conn.StageJS, h.cfg.NATS.Streams)
		}
		if err == nil {
			err = ensureHealthStream(ctx, h.conn.JS, h.cfg.NATS.Streams.Replicas)
		}
		if err == nil || !broker.NotReady(err) || ctx.Err() != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats: JetStream is not ready after %s (no meta leader, or fewer servers up than nats.streams.replicas %d: "+
				"check that the servers run and reach each other on their cluster routes): %w", broker.StartWait, h.cfg.NATS.Streams.Replicas, err)
		}
		h.log.Warn("nats: JetStream not ready for the streams yet; waiting", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// untilReady runs f again while it fails because JetStream is not ready
// for it (broker.NotReady), for up to broker.StartWait: on a cluster just
// started, a new replicated bucket's first reads can time out while its
// group elects a leader. f must be safe to run again.
func (h *Hub) untilReady(ctx context.Context, what string, f func() error) error {
	deadline := time.Now().Add(broker.StartWait)
	for {
		err := f()
		if err == nil || !broker.NotReady(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		h.log.Warn("nats: JetStream not ready yet; waiting", "for", what, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
