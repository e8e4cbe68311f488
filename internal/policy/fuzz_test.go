package policy

import (
	"encoding/json"
	"testing"
)

// FuzzParseDuration: never panics; an accepted duration is non-negative and
// survives a round trip through its JSON form.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"0", "30d", "1d12h", "90m", "1h30m", "-1h", "1.5d", "99999999d", "d", "1w", "", "3dd", "2562047h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("%q parsed to a negative duration %s", s, d)
		}
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatalf("marshal %s: %v", d, err)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q → %s → %s does not parse back: %v", s, d, b, err)
		}
		if back.Std() != d {
			t.Fatalf("%q: round trip %s → %s", s, d, back.Std())
		}
	})
}

// FuzzParsePolicy: never panics; an accepted policy validates and survives a
// round trip through JSON.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"retention":{"max_age":"30d","max_bytes":1000,"min_keep":"1d","grace":"0","schedule":"@every 1h"}}`,
		`{"compaction":{"enabled":true,"target_file_bytes":134217728,"min_input_files":4,"schedule":"*/5 * * * *"}}`,
		`{"export":{"target":"remote","after":"7d","window":"month","schedule":"@daily"}}`,
		`{"retention":{"max_age":"soon"}}`, `[]`, `{"x":1}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid policy: %v", err)
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
	})
}
