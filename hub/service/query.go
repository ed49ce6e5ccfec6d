package service

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
)

// vietnam is the zone dates are meant in (UTC+7, no daylight saving).
var vietnam = time.FixedZone("ICT", 7*3600)

// ParseQuery reads a search from URL parameters (the API's and the web
// form's): q, from, to, unit, type, number, signer, status, since, until,
// sort, limit, cursor. since and until are acceptance dates (YYYY-MM-DD,
// Vietnam time, both days included) or RFC 3339 times (until excluded).
func ParseQuery(v url.Values) (index.Query, error) {
	q := index.Query{
		Text: v.Get("q"), From: document.UnitID(strings.TrimSpace(v.Get("from"))), To: document.UnitID(strings.TrimSpace(v.Get("to"))),
		Unit: document.UnitID(strings.TrimSpace(v.Get("unit"))), Type: v.Get("type"), Number: v.Get("number"), Signer: v.Get("signer"),
		Status: document.StatusCode(strings.TrimSpace(v.Get("status"))), Sort: v.Get("sort"), Cursor: v.Get("cursor"),
	}
	var err error
	if s := strings.TrimSpace(v.Get("since")); s != "" {
		if q.Since, err = parseBound(s, false); err != nil {
			return q, fmt.Errorf("%w: since: %v", ErrInvalid, err)
		}
	}
	if s := strings.TrimSpace(v.Get("until")); s != "" {
		if q.Until, err = parseBound(s, true); err != nil {
			return q, fmt.Errorf("%w: until: %v", ErrInvalid, err)
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 {
			return q, fmt.Errorf("%w: limit %q: want a positive number", ErrInvalid, s)
		}
	}
	return q, nil
}

func parseBound(s string, end bool) (time.Time, error) {
	if len(s) == len(time.DateOnly) {
		d, err := time.ParseInLocation(time.DateOnly, s, vietnam)
		if err != nil {
			return d, err
		}
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	return time.Parse(time.RFC3339, s)
}
