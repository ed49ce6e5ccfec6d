package protocol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
)

// Kinds of ConnectError.
var (
	// ErrCredentials: the unit's credentials cannot connect it: unreadable,
	// issued for another unit, expired, or refused by the server
	// (authorization violation, revoked).
	ErrCredentials = errors.New("credentials refused")
	// ErrUnreachable: no NATS server answered at the URL.
	ErrUnreachable = errors.New("NATS unreachable")
)

// ConnectError says why ConnectUnit could not connect, in terms a person
// can act on. errors.Is matches its Kind.
type ConnectError struct {
	Kind   error // ErrCredentials or ErrUnreachable
	URL    string
	Unit   document.UnitID
	Reason string // e.g. "authorization violation", "issued for unit 000.02.00.H29", "connection refused"
	// Local: the credentials were refused before connecting (unreadable,
	// another unit's, expired); otherwise the server refused them.
	Local bool
	Err   error // the underlying error, if any
}

func (e *ConnectError) Error() string {
	switch {
	case e.Kind == ErrUnreachable:
		return fmt.Sprintf("protocol: cannot reach NATS at %s (%s)", e.URL, e.Reason)
	case e.Local:
		return fmt.Sprintf("protocol: the credentials cannot connect unit %s (%s)", e.Unit, e.Reason)
	default:
		return fmt.Sprintf("protocol: NATS at %s refused the credentials for unit %s (%s)", e.URL, e.Unit, e.Reason)
	}
}

// Unwrap returns the kind and the underlying error.
func (e *ConnectError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// CredsUnit reads a .creds file's user JWT (not its seed) and returns the
// name it was issued under, which the hub sets to the unit id, and when it
// expires (zero: never).
func CredsUnit(creds []byte) (string, time.Time, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("not a NATS credentials file: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("not a NATS credentials file: %w", err)
	}
	var exp time.Time
	if uc.Expires > 0 {
		exp = time.Unix(uc.Expires, 0)
	}
	return uc.Name, exp, nil
}

// checkCreds refuses, before connecting, credentials that cannot work for
// unit: unreadable, issued for another unit, or expired.
func checkCreds(url string, creds []byte, unit document.UnitID) error {
	local := func(reason string, err error) error {
		return &ConnectError{Kind: ErrCredentials, URL: url, Unit: unit, Reason: reason, Local: true, Err: err}
	}
	name, exp, err := CredsUnit(creds)
	if err != nil {
		return local(err.Error(), err)
	}
	// Credentials issued elsewhere may carry any name: only a name that is
	// another unit's id is known to be wrong.
	if other := document.UnitID(name); other != unit && other.Validate() == nil {
		return local("issued for unit "+name, nil)
	}
	if !exp.IsZero() && !exp.After(time.Now()) {
		return local("expired at "+exp.UTC().Format(time.RFC3339), nil)
	}
	return nil
}

// connectError classifies an error of nats.Connect.
func connectError(url string, unit document.UnitID, err error) error {
	for _, c := range []struct {
		err    error
		reason string
	}{
		{nats.ErrAuthorization, "authorization violation"},
		{nats.ErrAuthExpired, "authentication expired"},
		{nats.ErrAuthRevoked, "credentials revoked"},
		{nats.ErrAccountAuthExpired, "account authentication expired"},
	} {
		if errors.Is(err, c.err) {
			return &ConnectError{Kind: ErrCredentials, URL: url, Unit: unit, Reason: c.reason, Err: err}
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, nats.ErrNoServers):
		return &ConnectError{Kind: ErrUnreachable, URL: url, Unit: unit, Reason: "no server answered", Err: err}
	case errors.As(err, &ne):
		return &ConnectError{Kind: ErrUnreachable, URL: url, Unit: unit, Reason: ne.Error(), Err: err}
	}
	return fmt.Errorf("protocol: connect %s as %s: %w", url, unit, err)
}

// ConnectUnit connects to the hub's NATS as unit, with the unit's
// credentials (a .creds file's bytes, as the hub issues them). It returns:
//
//   - the connection, which reconnects forever once established (the first
//     connection must succeed: bad credentials or an unreachable server are
//     a *ConnectError here, so that they are reported rather than retried
//     blindly; credentials issued for another unit, or expired, are refused
//     before connecting);
//   - js, the hub's JetStream as the unit may use it: publish submissions
//     (SubmitMsg) and statuses (StatusMsg), bind the consumer of what it
//     receives, deliveries and notices (js.Consumer with StreamDeliver and
//     UnitConsumer; IsNotice tells them apart), ack their messages, and
//     upload large submissions (UploadStaged);
//   - stage, the unit's access to the store of large deliveries
//     (StageBucket), which it reads with GetStaged.
//
// opts are applied after the defaults (name "edx <unit>", reconnect forever,
// a 2s reconnect wait) and before what the unit's permissions require (its
// credentials and its inbox prefix), which they cannot change. Add an
// ErrorHandler to see permission violations, which NATS reports
// asynchronously.
func ConnectUnit(ctx context.Context, url string, creds []byte, unit document.UnitID, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, *Stage, error) {
	if err := unit.Validate(); err != nil {
		return nil, nil, nil, fmt.Errorf("protocol: connect: %w", err)
	}
	all := []nats.Option{
		nats.Name("edx " + string(unit)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(2 * time.Second),
	}
	if err := checkCreds(url, creds, unit); err != nil {
		return nil, nil, nil, err
	}
	all = append(all, opts...)
	all = append(all,
		nats.UserCredentialBytes(creds),
		nats.CustomInboxPrefix(InboxPrefix(string(unit))),
	)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, nil, nil, connectError(url, unit, err)
	}
	js, err := jetstream.NewWithAPIPrefix(nc, EDXAPIPrefix)
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("protocol: connect: %w", err)
	}
	sjs, err := jetstream.NewWithAPIPrefix(nc, StageAPIPrefix)
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("protocol: connect: %w", err)
	}
	return nc, js, newStage(nc, sjs, unit), nil
}
