package hub

import (
	"context"
	"encoding/pem"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/web"
)

// startAuth opens the accounts every hub shares (copying in, once, this
// hub's SQLite accounts file from before), takes the deployment's admin
// token (written to DATA/admin.token for the tools on this machine) and,
// when there is no account at all, creates the first admin with a random
// password in a 0600 file beside auth.path, and says how to sign in.
func (h *Hub) startAuth(ctx context.Context) error {
	cfg := h.cfg.Auth
	cfg.Buckets = h.cfg.NATS.Buckets
	// On a cluster just started, the accounts' buckets may not answer yet:
	// every step below can be taken again.
	if err := h.untilReady(ctx, "the accounts", func() (err error) {
		h.auth, err = auth.Open(ctx, cfg, h.js, h.log.With("component", "auth"))
		return err
	}); err != nil {
		return err
	}
	as := h.auth
	h.closers = append(h.closers, func() { as.Close() })
	if err := h.untilReady(ctx, "the admin token", func() (err error) {
		h.token, err = h.auth.AdminToken(ctx, filepath.Join(h.cfg.Data, "admin.token"))
		return err
	}); err != nil {
		return err
	}
	pwFile := filepath.Join(filepath.Dir(h.cfg.Auth.Path), "admin.password")
	var created bool
	if err := h.untilReady(ctx, "the first admin", func() (err error) {
		created, err = h.auth.EnsureFirstAdmin(ctx, pwFile)
		return err
	}); err != nil {
		return err
	}
	if created {
		h.log.Warn("first admin account created: sign in, then change its password and create your users",
			"sign_in", h.Info().HTTP+"/login", "user", h.auth.Config().FirstAdmin, "password_file", pwFile)
	}
	return nil
}

// handler is the hub's HTTP handler: the API under /api/v1 and the web UI
// for the rest, two faces on the hub's application service.
func (h *Hub) handler() http.Handler {
	log := h.log.With("component", "http")
	zone, _ := h.cfg.Web.Location() // validated with the configuration
	apiHandler := api.Handler(api.Deps{Service: h.svc, Auth: h.auth, Gatherer: h.reg, AdminToken: h.token,
		Log: log, Ready: h.ready, Web: web.Handler(web.Deps{Service: h.svc, Auth: h.auth, Log: log, Zone: zone})})
	mux := http.NewServeMux()
	if h.ca != nil {
		mux.HandleFunc("GET "+crlPath, h.serveCRL)
	}
	if h.tlog != nil {
		// The log, read-only, for anyone to mirror (C2SP tlog-tiles), and
		// its public key.
		mux.Handle(logPath, http.StripPrefix(strings.TrimSuffix(logPath, "/"), h.tlog.Handler()))
		mux.HandleFunc("GET "+logPath+"vkey", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte(h.tlogVKey + "\n"))
		})
	}
	if h.devTSA != nil {
		mux.Handle(tsaPath, h.devTSA)
	}
	mux.Handle("/", apiHandler)
	return mux
}

// logPath is where the hub serves its transparency log.
const logPath = "/log/"

// crlPath is where the hub serves the development CA's CRL: the CRL
// distribution point of the certificates the CA issues.
const crlPath = "/pki/crl.der"

// serveCRL answers with the development CA's current CRL, DER
// (application/pkix-crl, RFC 5280 section 4.2.1.13). Anyone may read it.
func (h *Hub) serveCRL(w http.ResponseWriter, r *http.Request) {
	b, err := h.ca.CRL()
	var der []byte
	if err == nil {
		if p, _ := pem.Decode(b); p != nil && p.Type == "X509 CRL" {
			der = p.Bytes
		}
	}
	if der == nil {
		h.log.Error("pki: the development CA's CRL cannot be served", "crl", h.ca.CRLPath(), "err", err)
		http.Error(w, "the CRL is not available", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "max-age=60")
	w.Header().Set("Content-Length", strconv.Itoa(len(der)))
	w.Write(der)
}
