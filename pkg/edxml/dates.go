package edxml

import (
	"strings"
	"time"
)

// Vietnam's time (UTC+7, no daylight saving): edXML times carry no zone.
var vietnam = time.FixedZone("ICT", 7*3600)

const (
	wireDate = "2006/01/02"
	wireTime = "2006/01/02 15:04:05"
	jsonDate = "2006-01-02" // document.json
)

// Layouts peers write: the regulation's yyyy/MM/dd, ISO's yyyy-MM-dd, and
// the day-first forms of some .NET systems. One-digit days and months are
// accepted; a fraction of a second is accepted after the seconds.
var (
	dateLayouts = []string{"2006/1/2", "2006-1-2", "2/1/2006", "2-1-2006"}
	timeLayouts = []string{" 15:4:5", "T15:4:5", " 15:4", "T15:4"}
	zoneLayouts = []string{"Z07:00", "Z0700", " Z07:00", ""}
)

// parseTime reads a date and time; a date alone is midnight. Without a zone
// the time is Vietnam's.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 8 || len(s) > 40 {
		return time.Time{}, false
	}
	for _, d := range dateLayouts {
		if t, err := time.ParseInLocation(d, s, vietnam); err == nil {
			return t, true
		}
		for _, tl := range timeLayouts {
			for _, z := range zoneLayouts {
				if t, err := time.ParseInLocation(d+tl+z, s, vietnam); err == nil {
					return t, true
				}
			}
		}
	}
	return time.Time{}, false
}

// parseDate reads a date, with or without a time (the time is ignored: the
// date is the one printed).
func parseDate(s string) (time.Time, bool) {
	t, ok := parseTime(s)
	if !ok {
		return time.Time{}, false
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), true
}

// toWireDate turns document.json's YYYY-MM-DD into edXML's yyyy/MM/dd.
func toWireDate(s string) (string, bool) {
	t, err := time.Parse(jsonDate, s)
	if err != nil {
		return "", false
	}
	return t.Format(wireDate), true
}
