package axis

import (
	"net/http"
	"testing"
)

// FuzzVerify feeds Verify arbitrary sign headers and key lists, signed with
// the right secret: it never panics, and what it accepts names systemid and
// timestamp and repeats its values in their headers.
func FuzzVerify(f *testing.F) {
	ts := FormatTimestamp(t0, nil)
	f.Add(`{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-timestamp":"`+ts+`"}`, "systemid;timestamp", "vxp.saas.03", ts)
	f.Add(`{ "XroadVnpt-timestamp" : "`+ts+`" ,"XroadVnpt-systemid":"vxp.saas.03"}`, "timestamp ; systemid", "vxp.saas.03", ts)
	f.Add(`{"XroadVnpt-systemid":"vxp.saas.03","XroadVnpt-systemid":"x"}`, "systemid", "x", "")
	f.Add(`[]`, ";;", "", "")
	f.Fuzz(func(t *testing.T, raw, keys, sys, stamp string) {
		h := http.Header{}
		h.Set(SignHeader, raw)
		h.Set(SignHeaderKey, keys)
		h.Set(HashHeader, HMAC(secret, raw))
		h.Set("XroadVnpt-systemid", sys)
		h.Set("XroadVnpt-timestamp", stamp)
		s, err := Verify(h, VerifyOptions{Secret: secrets, Now: t0})
		if err != nil {
			return
		}
		if s.SystemID != "vxp.saas.03" || !s.Has(ParamTimestamp) || s.Signature != HMAC(secret, raw) {
			t.Fatalf("accepted %+v", s)
		}
	})
}
