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
	var err error
	cfg := h.cfg.Auth
	cfg.Buckets = h.cfg.NATS.Buckets
	if h.auth, err = auth.Open(ctx, cfg, h.js, h.log.With("component", "auth")); err != nil {
		return err
	}
	as := h.auth
	h.closers = append(h.closers, func() { as.Close() })
	if h.token, err = h.auth.AdminToken(ctx, filepath.Join(h.cfg.Data, "admin.token")); err != nil {
		return err
	}
	pwFile := filepath.Join(filepath.Dir(h.cfg.Auth.Path), "admin.password")
	created, err := h.auth.EnsureFirstAdmin(ctx, pwFile)
	if err != nil {
		return err
	}
	if created {
		h.log.Warn("first admin account created: sign in, then change its password and create your users",
			"sign_in", h.Info().HTTP+"/login", "user", h.auth.Config().FirstAdmin, "password_file", pwFile)
	}
	return nil
}

// handler is the hub's HTTP handler: the API under /api/v1 and the web UI
// for the rest, sharing the access-checked Records.
func (h *Hub) handler() http.Handler {
	rec := &api.Records{Index: h.ix, Archive: h.arch, Trust: h.trust, MaxVerifications: h.cfg.HTTP.MaxVerifications,
		CursorKey: h.auth.CursorKey(), Now: h.cfg.Clock}
	log := h.log.With("component", "http")
	zone, _ := h.cfg.Web.Location() // validated with the configuration
	apiHandler := api.Handler(api.Deps{Records: rec, Units: h, Auth: h.auth, Gatherer: h.reg, AdminToken: h.token,
		Log: log, Ready: h.ready, Web: web.Handler(web.Deps{Records: rec, Auth: h.auth, Log: log, Zone: zone})})
	mux := http.NewServeMux()
	if h.ca != nil {
		mux.HandleFunc("GET "+crlPath, h.serveCRL)
	}
	if h.tlog != nil {
		// The transparency log, read-only, for anyone to mirror: the
		// checkpoint with its cosignatures, tiles, entries (tlog.Handler).
		mux.Handle(logPath, http.StripPrefix(strings.TrimSuffix(logPath, "/"), h.tlog.Handler()))
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
