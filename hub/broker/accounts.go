package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// Subjects of the system account the hub's system user may use
// (Keys.IssueSystemCreds). claimsUpdateSubject takes an account JWT on
// servers with a full resolver; accountUpdateSubject (per account) on every
// resolver. The rest are ConnLimiter's: an account's connect and disconnect
// events, the kick of one connection on one server, and the connection list
// every server answers.
const (
	claimsUpdateSubject    = "$SYS.REQ.CLAIMS.UPDATE"
	accountUpdateSubject   = "$SYS.REQ.ACCOUNT.%s.CLAIMS.UPDATE"
	accountLookupSubject   = "$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP"
	connectEventSubject    = "$SYS.ACCOUNT.%s.CONNECT"
	disconnectEventSubject = "$SYS.ACCOUNT.%s.DISCONNECT"
	kickSubject            = "$SYS.REQ.SERVER.%s.KICK"
	connzSubject           = "$SYS.REQ.SERVER.PING.CONNZ"
)

// SystemConn is the hub's connection to the system account
// (Keys.IssueSystemCreds), through which it pushes account JWTs to the
// servers and limits the units' connections (ConnLimiter): it works the same
// with the embedded server and an external cluster.
type SystemConn struct {
	nc *nats.Conn
}

// ConnectSystem connects to the system account with creds (reconnecting
// forever).
func ConnectSystem(ctx context.Context, url string, creds []byte, opts ...nats.Option) (*SystemConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	all := append([]nats.Option{nats.Name(hubUserName + " system"), nats.MaxReconnects(-1)}, opts...)
	all = append(all, nats.UserCredentialBytes(creds))
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("broker: connect system account %s: %w", url, err)
	}
	return &SystemConn{nc: nc}, nil
}

// Close closes the connection.
func (s *SystemConn) Close() { s.nc.Close() }

// ErrAccountNotLoaded is PushAccount's answer when the server took the JWT
// but does not hold the account (a MEMORY resolver that has not loaded it):
// it will load the JWT it was configured with.
var ErrAccountNotLoaded = errors.New("broker: the server has not loaded the account and did not store its JWT")

// PushAccount sends an account JWT to the servers and waits for the first
// answer. A server applies it at once: a revoked user's connections are
// closed, its new connections refused; a full resolver also stores it.
func (s *SystemConn) PushAccount(ctx context.Context, accountJWT string) error {
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return fmt.Errorf("broker: push account: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg, err := s.nc.RequestWithContext(ctx, fmt.Sprintf(accountUpdateSubject, ac.Subject), []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("broker: push account %s: %w", ac.Name, err)
	}
	var resp struct {
		Data *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"data"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("broker: push account %s: answer %q: %w", ac.Name, msg.Data, err)
	}
	switch {
	case resp.Error != nil:
		return fmt.Errorf("broker: push account %s: %s (%d)", ac.Name, resp.Error.Description, resp.Error.Code)
	case resp.Data == nil:
		return fmt.Errorf("broker: push account %s: empty answer %q", ac.Name, msg.Data)
	case resp.Data.Message == "jwt update skipped":
		return fmt.Errorf("%w (account %s)", ErrAccountNotLoaded, ac.Name)
	}
	return nil
}
