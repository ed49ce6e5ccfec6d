package tsa

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/digitorus/timestamp"

	"github.com/edxhub/edx/pkg/pki"
)

// OIDDevPolicy is the development TSA's default policy, under the edx
// documentation arc (see pki.OIDExtKeyUsageHubSigner):
// 1.3.6.1.4.1.32473.7001.2 edx TSA policies, .1 the development TSA.
var OIDDevPolicy = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7001, 2, 1}

// maxQuerySize bounds a request body; a query is about a hundred bytes.
const maxQuerySize = 16 << 10

// ServerConfig is a TSA's key, certificate and policy.
type ServerConfig struct {
	// Key signs the tokens; Chain is its certificate (extended key usage
	// timeStamping, critical) then the CAs up to, not including, the root.
	Key   crypto.Signer
	Chain []*x509.Certificate
	// Policy is the policy every token names (default OIDDevPolicy). A
	// request for another policy is refused (unacceptedPolicy).
	Policy asn1.ObjectIdentifier
	// Accuracy is stated in every token (default one second).
	Accuracy time.Duration
	// Now is the TSA's clock (default time.Now).
	Now func() time.Time
}

// Server is a development time-stamping authority: an http.Handler that
// answers RFC 3161 queries (POST application/timestamp-query) with tokens
// signed by its key. It keeps no state; serial numbers are random 160-bit
// integers.
type Server struct {
	cfg ServerConfig
}

// NewServer checks that the key matches the certificate and that the
// certificate is a TSA's (RFC 3161 section 2.3), and returns the server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Key == nil || len(cfg.Chain) == 0 {
		return nil, errors.New("tsa: server: a key and a certificate are required")
	}
	if _, err := pki.NewSignerFromKey(cfg.Key, cfg.Chain); err != nil {
		return nil, fmt.Errorf("tsa: server: %w", err)
	}
	if !pki.IsTimeStamping(cfg.Chain[0]) {
		return nil, errors.New("tsa: server: the certificate's extended key usage is not timeStamping alone and critical")
	}
	if cfg.Policy == nil {
		cfg.Policy = OIDDevPolicy
	}
	if cfg.Accuracy <= 0 {
		cfg.Accuracy = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg}, nil
}

// LoadServer reads a PEM key and certificate chain (pki.EnsureTSA's files)
// and returns a server with the default policy, or policy when it is set.
func LoadServer(keyPath, certPath, policy string) (*Server, error) {
	s, err := pki.LoadSigner(keyPath, certPath)
	if err != nil {
		return nil, err
	}
	cfg := ServerConfig{Key: s.Key, Chain: s.Chain}
	if policy != "" {
		if cfg.Policy, err = parseOID(policy); err != nil {
			return nil, fmt.Errorf("tsa: server: policy: %w", err)
		}
	}
	return NewServer(cfg)
}

// Certificate returns the TSA's certificate.
func (s *Server) Certificate() *x509.Certificate { return s.cfg.Chain[0] }

// ServeHTTP answers one time-stamp query. Transport errors (method, type,
// size) are HTTP errors; a query the TSA will not stamp gets a rejection
// TimeStampResp, as RFC 3161 section 2.4.2 lays out.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an RFC 3161 query", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != QueryContentType {
		http.Error(w, "want Content-Type "+QueryContentType, http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxQuerySize+1))
	if err != nil {
		http.Error(w, "read query", http.StatusBadRequest)
		return
	}
	if len(body) > maxQuerySize {
		http.Error(w, "query too large", http.StatusRequestEntityTooLarge)
		return
	}
	resp, err := s.Respond(body)
	if err != nil {
		http.Error(w, "time-stamping failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ReplyContentType)
	w.Write(resp)
}

// Respond turns a DER TimeStampReq into a DER TimeStampResp. The error is
// for failures of the TSA itself; a bad query gets a rejection response.
func (s *Server) Respond(query []byte) ([]byte, error) {
	req, err := timestamp.ParseRequest(query)
	if err != nil {
		return timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.BadDataFormat)
	}
	switch req.HashAlgorithm {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.BadAlgorithm)
	}
	if len(req.HashedMessage) != req.HashAlgorithm.Size() {
		return timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.BadDataFormat)
	}
	if req.TSAPolicyOID != nil && !req.TSAPolicyOID.Equal(s.cfg.Policy) {
		return timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.UnacceptedPolicy)
	}
	if len(req.Extensions) > 0 {
		return timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.UnacceptedExtension)
	}
	ts := &timestamp.Timestamp{
		HashAlgorithm:     req.HashAlgorithm,
		HashedMessage:     req.HashedMessage,
		Time:              s.cfg.Now().UTC().Truncate(time.Second),
		Accuracy:          s.cfg.Accuracy,
		Policy:            s.cfg.Policy,
		Nonce:             req.Nonce,
		AddTSACertificate: req.Certificates,
		Certificates:      s.cfg.Chain[1:],
	}
	out, err := ts.CreateResponseWithOpts(s.cfg.Chain[0], s.cfg.Key, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("tsa: sign: %w", err)
	}
	return out, nil
}
