package engine

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// InputError reports uploaded rows that cannot be ingested. It is the user's
// to fix; the message says what is wrong and, where it applies, where.
type InputError struct {
	// Row is the 1-based data row (the CSV header is not counted; in JSON the
	// n-th object), or 0 when the problem is not tied to a row.
	Row int64
	// Column names the column concerned, or is empty.
	Column string
	// Message says what is wrong.
	Message string
}

// Error renders e as "row 3, column "value": ...".
func (e *InputError) Error() string {
	var b strings.Builder
	if e.Row > 0 {
		fmt.Fprintf(&b, "row %d", e.Row)
	}
	if e.Column != "" {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "column %q", e.Column)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// SQLError reports user SQL that is refused or fails: a statement other than
// one SELECT, a syntax or binder error, a forbidden file access, a timeout.
type SQLError struct {
	// Message is DuckDB's or the engine's explanation.
	Message string
	// Err is the underlying cause, if any (e.g. context.DeadlineExceeded).
	Err error
}

// Error returns the message.
func (e *SQLError) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *SQLError) Unwrap() error { return e.Err }

var (
	// reFileClause matches the file path DuckDB puts in reader errors; the
	// path is a server-side temporary file that means nothing to the user.
	reFileClause = regexp.MustCompile(`\s*in file "[^"]*"(, )?`)
	// reJSONRecord finds the record number in DuckDB's JSON reader errors.
	reJSONRecord = regexp.MustCompile(`in (?:line|record/value) (\d+)`)
	// reJSONTransform is the prefix of DuckDB's JSON conversion errors.
	reJSONTransform = regexp.MustCompile(`^JSON transform error in (?:line|record/value) \d+: `)
	// reCSVLine finds the line number in DuckDB's CSV reader errors.
	reCSVLine = regexp.MustCompile(`CSV Error on Line: (\d+)`)
)

// cleanDuckDBMessage keeps the first line of a DuckDB reader error, without
// the error class prefix and the temporary file path.
func cleanDuckDBMessage(msg string) string {
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	for _, p := range []string{"Invalid Input Error: ", "Conversion Error: ", "IO Error: ", "Parser Error: ", "Binder Error: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	msg = reFileClause.ReplaceAllString(msg, " ")
	msg = strings.Join(strings.Fields(msg), " ")
	return strings.ReplaceAll(msg, " .", ".")
}

// submatchInt returns the first group of re in s as a number, or 0.
func submatchInt(re *regexp.Regexp, s string) int64 {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
