package main

import (
	"fmt"
	"os"
	"time"
	_ "time/tzdata" // the default zone loads on a machine without a zone database
)

// Times a person reads are written one way, as the hub's web UI writes
// them (hub/web.TimeLayout; the CLI keeps its own copy of the layout):
// in the display zone, with its offset, 2026-11-30 14:05:09 +07:00. The
// zone is EDX_TIME_ZONE, an IANA name, by default Asia/Ho_Chi_Minh (the
// hub's web.time_zone default). --json output keeps RFC 3339 in UTC, as
// the API answers.
const timeLayout = "2006-01-02 15:04:05 -07:00"

const defaultTimeZone = "Asia/Ho_Chi_Minh"

var defaultZone = func() *time.Location {
	loc, err := time.LoadLocation(defaultTimeZone)
	if err != nil {
		panic(err) // time/tzdata has it
	}
	return loc
}()

// displayZone is the zone of showTime, set by run from EDX_TIME_ZONE.
var displayZone = defaultZone

// loadDisplayZone reads EDX_TIME_ZONE.
func loadDisplayZone() error {
	name := os.Getenv("EDX_TIME_ZONE")
	if name == "" {
		displayZone = defaultZone
		return nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return fmt.Errorf("EDX_TIME_ZONE %q: want an IANA time zone such as %s", name, defaultTimeZone)
	}
	displayZone = loc
	return nil
}

// showTime writes t for a person; "" for the zero time.
func showTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(displayZone).Format(timeLayout)
}
