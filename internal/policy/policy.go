// Package policy defines a dataset's lifecycle policy (compaction, retention,
// export), its JSON form, its defaults and its validation.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Duration is a time.Duration that marshals as a string and accepts Go
// duration syntax plus the units "d" (24h) and "w" (7 days), e.g. "30d",
// "1w", "1d12h", "90m".
type Duration time.Duration

// DurationUnits lists the units a duration accepts, as said in error messages.
const DurationUnits = `w (7 days), d (24 hours), h, m, s, ms, us, ns; for example "30d", "1w", "1d12h" or "90m"`

// maxDays bounds the weeks and days of a duration (about 100 years).
const maxDays = 100 * 365

// ParseDuration parses Go duration syntax extended with the units "w" (7
// days) and "d" (24 hours), written first and as whole numbers: "2w3d12h".
// Negative durations are refused. Errors show the value, the units accepted
// and, where one is evident, the form meant ("30 days" → "30d").
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		msg := fmt.Sprintf("invalid duration %q: %s", truncate(s, 80), err)
		if hint := durationHint(s); hint != "" {
			msg += fmt.Sprintf("; write %q", hint)
		}
		return 0, errors.New(msg + "; units: " + DurationUnits)
	}
	return d, nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return 0, errors.New("empty")
	case s == "0":
		return 0, nil
	case strings.HasPrefix(s, "-"):
		return 0, errors.New("must not be negative")
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return 0, errors.New("a number and its unit are written together, without spaces")
	}
	var days uint64
	rest := s
	// Peel off leading "<n>w" and "<n>d" groups; the remainder is Go syntax.
	for _, u := range []struct {
		unit byte
		days uint64
	}{{'w', 7}, {'d', 1}} {
		i := strings.IndexByte(rest, u.unit)
		if i < 0 {
			continue
		}
		n, err := strconv.ParseUint(rest[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%q must be a whole number of %s written before the other units", rest[:i+1], unitName(u.unit))
		}
		if n > maxDays {
			return 0, errors.New("more than 100 years")
		}
		days += n * u.days
		rest = rest[i+1:]
	}
	if days > maxDays {
		return 0, errors.New("more than 100 years")
	}
	total := time.Duration(days) * 24 * time.Hour
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, errors.New(unquote(err))
		}
		if d < 0 {
			return 0, errors.New("must not be negative")
		}
		total += d
	}
	// The limit holds for every unit, so that any duration accepted can be
	// rendered in days (String) and parsed back.
	if total < 0 || total > maxDays*24*time.Hour {
		return 0, errors.New("more than 100 years")
	}
	return total, nil
}

func unitName(u byte) string {
	if u == 'w' {
		return "weeks"
	}
	return "days"
}

// durationWords maps unit words to their symbols, longest first.
var durationWords = []struct{ word, unit string }{
	{"weeks", "w"}, {"week", "w"}, {"days", "d"}, {"day", "d"}, {"hours", "h"}, {"hour", "h"}, {"hrs", "h"}, {"hr", "h"},
	{"minutes", "m"}, {"minute", "m"}, {"mins", "m"}, {"min", "m"}, {"seconds", "s"}, {"second", "s"}, {"secs", "s"}, {"sec", "s"},
}

// durationHint returns the valid form a refused duration evidently meant
// ("30 days" → "30d", "-5d" → "5d", "1.5d" → "36h"), or "".
func durationHint(s string) string {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimLeft(h, "-+")
	h = strings.Join(strings.Fields(h), "")
	for _, w := range durationWords {
		h = strings.ReplaceAll(h, w.word, w.unit)
	}
	if h != s {
		if _, err := parseDuration(h); err == nil && h != "0" {
			return h
		}
	}
	// Fractional weeks or days: say it in hours.
	for unit, hours := range map[string]float64{"w": 168, "d": 24} {
		if num, ok := strings.CutSuffix(h, unit); ok {
			if f, err := strconv.ParseFloat(num, 64); err == nil && f > 0 && f < maxDays {
				in := strconv.FormatFloat(f*hours, 'f', -1, 64) + "h"
				if _, err := parseDuration(in); err == nil {
					return in
				}
			}
		}
	}
	return ""
}

func unquote(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "time: ") {
		return strings.TrimPrefix(msg[:i], "time: ")
	}
	return strings.TrimPrefix(msg, "time: ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d, using whole days where it can.
func (d Duration) String() string {
	td := time.Duration(d)
	if td > 0 && td%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(td/(24*time.Hour)), 10) + "d"
	}
	// Go's form without its zero minutes and seconds: "1h", not "1h0m0s".
	out := td.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON implements json.Unmarshaler; it accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a duration string such as \"30d\" or \"1h\", not %s", truncate(string(b), 40))
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// SizeUnits describes the forms a size accepts, as said in error messages.
const SizeUnits = `a whole number of bytes (1073741824) or a string with a unit: ` +
	`kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), for example "10GB" or "512MiB"`

// sizeUnits maps each accepted unit (compared case-insensitively) to its bytes.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "pib": 1 << 50,
}

// ParseSize parses a size in bytes: a plain number of bytes ("1048576") or
// a number with a unit, SI ("10GB" = 10×1000³) or IEC ("512MiB" = 512×1024²),
// the unit case-insensitive and optionally after a space; a decimal fraction
// is allowed when the result is a whole number of bytes ("1.5GB"). Negative
// sizes and bare "K", "M", "G" (SI or IEC?) are refused.
func ParseSize(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %s; write %s", truncate(s, 80), err, SizeUnits)
	}
	return n, nil
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty")
	}
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("must not be negative")
	}
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if end >= 0 {
		num, unit = s[:end], strings.TrimSpace(s[end:])
	}
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		switch strings.ToLower(unit) {
		case "k", "m", "g", "t", "p":
			return 0, fmt.Errorf("%q is ambiguous: say %sB (powers of 1000) or %siB (powers of 1024)", unit, strings.ToUpper(unit), strings.ToUpper(unit))
		}
		return 0, fmt.Errorf("unknown unit %q", truncate(unit, 20))
	}
	whole, frac, _ := strings.Cut(num, ".")
	if whole == "" && frac == "" || strings.Contains(frac, ".") {
		return 0, errors.New("not a number")
	}
	var w int64
	if whole != "" {
		v, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || v > math.MaxInt64/mult {
			return 0, errors.New("too large")
		}
		w = v * mult
	}
	if frac = strings.TrimRight(frac, "0"); frac != "" {
		// frac/10^len(frac) × mult must be a whole number of bytes.
		if len(frac) > 18 {
			return 0, errors.New("too many decimal places")
		}
		f, err := strconv.ParseInt(frac, 10, 64)
		if err != nil {
			return 0, errors.New("not a number")
		}
		scale := int64(math.Pow10(len(frac)))
		if f > math.MaxInt64/mult || (f*mult)%scale != 0 {
			return 0, errors.New("not a whole number of bytes")
		}
		if w > math.MaxInt64-f*mult/scale {
			return 0, errors.New("too large")
		}
		w += f * mult / scale
	}
	return w, nil
}

// decodeSize decodes a JSON size: a number of bytes or a string with a unit.
func decodeSize(b []byte) (int64, error) {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return ParseSize(s)
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return 0, fmt.Errorf("must be a size, not %s; write %s", truncate(string(b), 40), SizeUnits)
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("invalid size %s: not a whole number of bytes that fits in 64 bits; write %s", truncate(n.String(), 40), SizeUnits)
	case v < 0:
		return 0, fmt.Errorf("invalid size %d: must not be negative", v)
	}
	return v, nil
}
