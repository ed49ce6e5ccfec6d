package tsa

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/digitorus/timestamp"
)

// Content types of RFC 3161 section 3.4 (time-stamp protocol over HTTP).
const (
	QueryContentType = "application/timestamp-query"
	ReplyContentType = "application/timestamp-reply"
)

// Config says which TSAs to ask and how.
type Config struct {
	// URLs of the TSAs, tried in order until one answers with a good token.
	URLs []string `yaml:"urls"`
	// Timeout bounds one request to one TSA (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// Policy, when set, is requested and required in the token.
	Policy string `yaml:"policy"`
	// Roots, when set, are the TSA trust roots a token must chain to before
	// the client returns it (set them: a token that will not verify later is
	// no evidence).
	Roots *x509.CertPool `yaml:"-"`
	// HTTPClient is the client to use (default: a new one).
	HTTPClient *http.Client `yaml:"-"`
}

func (c *Config) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if len(c.URLs) == 0 {
		return errors.New("tsa: no TSA URL")
	}
	for _, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("tsa: URL %q: want http(s)://host/path", u)
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("tsa: timeout %s: want positive", c.Timeout)
	}
	if c.Policy != "" {
		if _, err := parseOID(c.Policy); err != nil {
			return fmt.Errorf("tsa: policy: %w", err)
		}
	}
	return nil
}

// Client asks TSAs for tokens.
type Client struct {
	cfg    Config
	policy asn1.ObjectIdentifier
}

// NewClient validates cfg and returns a client.
func NewClient(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg}
	if cfg.Policy != "" {
		c.policy, _ = parseOID(cfg.Policy)
	}
	return c, nil
}

// Timestamp asks the TSAs at urls, in order, for a token over digest
// (SHA-256, SHA-384 or SHA-512 by its length) with default settings and no
// trust check; see Client for those.
func Timestamp(ctx context.Context, urls []string, digest []byte) ([]byte, error) {
	c, err := NewClient(Config{URLs: urls})
	if err != nil {
		return nil, err
	}
	return c.Timestamp(ctx, digest)
}

// Timestamp asks each configured TSA in turn for a token over digest and
// returns the first good one: granted, over this digest, with this request's
// nonce, and chaining to the roots when they are configured. The error names
// every TSA's failure.
func (c *Client) Timestamp(ctx context.Context, digest []byte) ([]byte, error) {
	h, err := hashForDigest(digest)
	if err != nil {
		return nil, err
	}
	nonce, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, fmt.Errorf("tsa: nonce: %w", err)
	}
	req := &timestamp.Request{HashAlgorithm: h, HashedMessage: digest, Certificates: true, Nonce: nonce, TSAPolicyOID: c.policy}
	query, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("tsa: request: %w", err)
	}
	var errs []error
	for _, u := range c.cfg.URLs {
		tok, err := c.ask(ctx, u, query, digest, nonce)
		if err == nil {
			return tok, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("tsa: no token: %w", errors.Join(errs...))
}

func (c *Client) ask(ctx context.Context, u string, query, digest []byte, nonce *big.Int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(query))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", QueryContentType)
	hr.Header.Set("Accept", ReplyContentType)
	resp, err := c.cfg.HTTPClient.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != ReplyContentType {
		return nil, fmt.Errorf("answer of type %q, want %s", resp.Header.Get("Content-Type"), ReplyContentType)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxTokenSize+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(body) > MaxTokenSize {
		return nil, fmt.Errorf("answer over %d bytes", MaxTokenSize)
	}
	ts, err := timestamp.ParseResponse(body)
	if err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if !bytes.Equal(ts.HashedMessage, digest) {
		return nil, errors.New("the token stamps another digest")
	}
	if ts.Nonce == nil || ts.Nonce.Cmp(nonce) != 0 {
		return nil, errors.New("the token does not carry this request's nonce")
	}
	if c.policy != nil && !ts.Policy.Equal(c.policy) {
		return nil, fmt.Errorf("policy %s, want %s", ts.Policy, c.policy)
	}
	if c.cfg.Roots != nil {
		if _, err := VerifyToken(ts.RawToken, digest, VerifyOptions{Roots: c.cfg.Roots, At: time.Now(), Policy: c.policy}); err != nil {
			return nil, err
		}
	}
	return ts.RawToken, nil
}

func hashForDigest(d []byte) (crypto.Hash, error) {
	switch len(d) {
	case crypto.SHA256.Size():
		return crypto.SHA256, nil
	case crypto.SHA384.Size():
		return crypto.SHA384, nil
	case crypto.SHA512.Size():
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("tsa: a digest of %d bytes is not SHA-256, SHA-384 or SHA-512", len(d))
}

// parseOID reads a dotted object identifier such as 1.3.6.1.4.1.32473.7001.2.1.
func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	n, digits := 0, 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if digits == 0 {
				return nil, fmt.Errorf("object identifier %q is malformed", s)
			}
			oid = append(oid, n)
			n, digits = 0, 0
			continue
		}
		if s[i] < '0' || s[i] > '9' || n > (1<<31)/10 {
			return nil, fmt.Errorf("object identifier %q is malformed", s)
		}
		n = n*10 + int(s[i]-'0')
		digits++
	}
	if len(oid) < 2 {
		return nil, fmt.Errorf("object identifier %q is malformed", s)
	}
	return oid, nil
}
