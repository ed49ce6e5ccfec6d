package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// What a hub checks before it joins a cluster: its keys directory must be
// the one the cluster's servers were configured from (edx-hub nats-config),
// the same on every hub.

// Operator is the operator's public key.
func (k *Keys) Operator() string { return k.operatorPub }

// AccountSigningKey, UnitsSigningKey and StageSigningKey are the public
// signing keys of the EDX, UNITS and STAGE accounts: the keys that sign
// their users' credentials.
func (k *Keys) AccountSigningKey() string { return k.edx.signingPub }
func (k *Keys) UnitsSigningKey() string   { return k.units.signingPub }
func (k *Keys) StageSigningKey() string   { return k.stage.signingPub }

// CredsAccount returns the account of the user in a .creds file: the
// account that signed it, or for which its signing key signed it.
func CredsAccount(creds []byte) (string, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "", fmt.Errorf("broker: creds: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", fmt.Errorf("broker: creds: %w", err)
	}
	if uc.IssuerAccount != "" {
		return uc.IssuerAccount, nil
	}
	return uc.Issuer, nil
}

// Answers of AccountSigningKeys that are not a mismatch.
var (
	// ErrNoResolver: no server answers account lookups (a MEMORY
	// resolver): there is nothing to compare with.
	ErrNoResolver = errors.New("broker: no server answers account lookups (not a full resolver)")
	// ErrAccountNotStored: the resolver has no JWT for the account yet.
	ErrAccountNotStored = errors.New("broker: the resolver holds no JWT for the account")
)

// AccountSigningKeys asks the servers' full resolver for the JWT it holds
// for an account and returns the account's signing keys.
func (s *SystemConn) AccountSigningKeys(ctx context.Context, pub string) ([]string, error) {
	msg, err := s.nc.RequestWithContext(ctx, fmt.Sprintf(accountLookupSubject, pub), nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return nil, fmt.Errorf("%w: %v", ErrNoResolver, err)
	case err != nil:
		return nil, fmt.Errorf("broker: look up account %s: %w", pub, err)
	case len(msg.Data) == 0:
		return nil, ErrAccountNotStored
	}
	ac, err := jwt.DecodeAccountClaims(string(msg.Data))
	if err != nil {
		return nil, fmt.Errorf("broker: look up account %s: %w", pub, err)
	}
	return ac.SigningKeys.Keys(), nil
}
