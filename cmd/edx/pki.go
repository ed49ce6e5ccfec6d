package main

import (
	"context"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

func init() {
	register(command{"pki init", "create a development city CA and the hub's certificate", pkiInit})
	register(command{"pki issue", "issue a unit's signing key and certificate", pkiIssue})
	register(command{"pki revoke", "revoke a certificate and sign a new CRL", pkiRevoke})
	register(command{"pki rotate-hub", "give the hub a new receipt-signing key and certificate", pkiRotateHub})
}

func pkiInit(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "pki init", "--dir DIR [--city NAME] [--crl-url URL]")
	dir := fs.String("dir", "pki", "directory for the CA")
	city := fs.String("city", "Thành phố Hồ Chí Minh", "the city or province the CA serves")
	crlURL := fs.String("crl-url", "", "CRL distribution point written into the certificates (a hub running with the CA sets its own /pki/crl.der)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	ca, err := pki.InitCAWith(*dir, pki.CAOptions{City: *city, CRLURL: *crlURL})
	if err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "development CA created in %s\n  trust bundle (give it to agents and auditors): %s\n  hub certificate (hub signer profile, extended key usage %s): %s\n  CRL: %s\n",
		ca.Dir, ca.RootsPath(), pki.OIDExtKeyUsageHubSigner, ca.HubCertPath(), ca.CRLPath())
	return exitOK
}

func pkiIssue(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "pki issue", "--unit ID --name NAME --dir DIR [--key-type p256|rsa2048|rsa3072]")
	dir := fs.String("dir", "pki", "directory of the CA")
	unit := fs.String("unit", "", "unit identifier, e.g. 000.01.00.H29")
	name := fs.String("name", "", "the unit's name, e.g. \"Sở Tài chính\"")
	kt := fs.String("key-type", "p256", "key type: p256, rsa2048 or rsa3072")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	u, err := document.ParseUnitID(*unit)
	if err != nil {
		return fail(e, "--unit: %v", err)
	}
	if *name == "" {
		return fail(e, "--name is required")
	}
	ca, err := pki.OpenCA(*dir)
	if err != nil {
		return fail(e, "%v (run edx pki init first)", err)
	}
	kp, cp, err := ca.IssueUnit(u, *name, pki.KeyType(*kt))
	if err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "unit %s: key %s (mode 0600), certificate %s\n", u, kp, cp)
	return exitOK
}

func pkiRevoke(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "pki revoke", "--dir DIR (--serial HEX | --cert FILE)")
	dir := fs.String("dir", "pki", "directory of the CA")
	serial := fs.String("serial", "", "serial number in hex")
	certPath := fs.String("cert", "", "certificate file to revoke")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	n := new(big.Int)
	switch {
	case *certPath != "":
		b, err := os.ReadFile(*certPath)
		if err != nil {
			return fail(e, "%v", err)
		}
		cs, err := pki.ParseCertificates(b)
		if err != nil {
			return fail(e, "%s: %v", *certPath, err)
		}
		n = cs[0].SerialNumber
	case *serial != "":
		if _, ok := n.SetString(*serial, 16); !ok {
			return fail(e, "--serial: not a hex number")
		}
	default:
		return fail(e, "give --serial or --cert")
	}
	ca, err := pki.OpenCA(*dir)
	if err != nil {
		return fail(e, "%v", err)
	}
	if err := ca.Revoke(n, time.Now()); err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "revoked serial %s; new CRL signed at %s\n", n.Text(16), ca.CRLPath())
	fmt.Fprintln(e.stdout, "  a hub reading this CRL applies it within its pki.crl_poll (default 5s): documents signed with the certificate are refused\n"+
		"  (signature.revoked) and the unit's NATS credentials revoked; give the unit a new certificate: edx unit rotate ID --cert")
	return exitOK
}

func pkiRotateHub(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "pki rotate-hub", "--dir DIR [--days N]")
	dir := fs.String("dir", "pki", "directory of the CA")
	days := fs.Int("days", 3650, "validity of the new hub certificate, in days")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *days < 1 {
		return fail(e, "--days: at least 1")
	}
	ca, err := pki.OpenCA(*dir)
	if err != nil {
		return fail(e, "%v", err)
	}
	old, err := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		return fail(e, "%v", err)
	}
	cert, err := ca.RotateHub(time.Duration(*days) * 24 * time.Hour)
	if err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "new hub certificate, serial %s, valid until %s, hub signer profile (extended key usage %s): %s\n",
		cert.SerialNumber.Text(16), cert.NotAfter.UTC().Format(time.RFC3339), pki.OIDExtKeyUsageHubSigner, ca.HubCertPath())
	fmt.Fprintln(e.stdout, "  restart the hub to sign receipts with it; receipts signed before stay valid (checked as of their acceptance)")
	if !pki.IsHubReceiptSigner(old.Cert()) {
		fmt.Fprintf(e.stdout, "  the old certificate (serial %s) has no hub signer profile: the hub retires it when it starts with the new one\n"+
			"  (revoked, reason superseded, at that time): what it signed before stays valid, nothing after\n", old.Cert().SerialNumber.Text(16))
	}
	return exitOK
}
