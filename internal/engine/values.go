package engine

import (
	"fmt"

	"timestore/internal/catalog"
)

// readType is the type the reader of format produces for a column of type
// t: text, converted by valueExpr, except where DuckDB's own reader converts
// exactly as valueExpr would: doubles and booleans in CSV. Timestamps are
// read as text because DuckDB's CSV reader turns unparsable TIMESTAMPTZ
// values into NULL instead of failing and drops UTC offsets; integers,
// because its integer conversion rounds fractions (1.5 becomes 2) and reads
// hex and exponents; JSON values, because its JSON reader turns numbers into
// booleans and booleans into numbers.
func readType(t string, format Format) string {
	if format != FormatCSV || isTime(t) || isInteger(t) {
		return "VARCHAR"
	}
	s, _ := sqlType(t)
	return s
}

// integerPattern is the text of an integer value: decimal digits, with an
// optional sign, underscores between digits and surrounding white space, as
// DuckDB reads them. DuckDB's cast alone would also read fractions
// (rounded), exponents and hex or binary prefixes.
const integerPattern = `\s*[+-]?[0-9]+(_[0-9]+)*\s*`

// isInteger reports whether a column type is an integer type.
func isInteger(t string) bool {
	return t == catalog.TypeInteger || t == catalog.TypeBigint
}

// valueExpr converts the text expression q to a value of the column type t:
// timestamps by timeExpr, integers only from integerPattern text, other
// types by DuckDB's cast. A value that does not convert fails the query, or
// with try gives NULL. NULL stays NULL.
func valueExpr(q, t string, try bool) string {
	switch {
	case isTime(t):
		return timeExpr(q, t, try)
	case t == catalog.TypeVarchar:
		return q
	}
	st, _ := sqlType(t)
	cast := "CAST"
	if try {
		cast = "TRY_CAST"
	}
	if !isInteger(t) {
		return fmt.Sprintf("%s(%s AS %s)", cast, q, st)
	}
	bad := "NULL"
	if !try {
		bad = "error('timestore: not an integer')"
	}
	return fmt.Sprintf("CASE WHEN %[1]s IS NULL THEN NULL WHEN regexp_full_match(%[1]s, '%[2]s') THEN %[3]s(%[1]s AS %[4]s) ELSE %[5]s END",
		q, integerPattern, cast, st, bad)
}

// typeHint says which values a column of type t takes, for the message
// that refuses one (docs/api.md, "Column types and accepted values", is the
// long form).
func typeHint(t string) string {
	switch t {
	case catalog.TypeInteger:
		return "an integer is a whole number in decimal digits from -2147483648 to 2147483647, such as 42 or -7; fractions (1.5), exponents (1e3) and hex (0x10) are refused"
	case catalog.TypeBigint:
		return "a bigint is a whole number in decimal digits from -9223372036854775808 to 9223372036854775807, such as 42 or -7; fractions (1.5), exponents (1e3) and hex (0x10) are refused"
	case catalog.TypeDouble:
		return "a double is a decimal number such as 1.5, -0.25, 6.02e23, NaN or Infinity; booleans and hex are refused"
	case catalog.TypeBoolean:
		return "a boolean is true or false, in any case; t/f, yes/no, y/n and 1/0 are read too, without surrounding spaces"
	case catalog.TypeTimestamp, catalog.TypeTimestampTZ:
		return "use ISO 8601 text such as 2024-03-01T10:00:00Z, 2024-03-01 10:00:00.5 (UTC) or 2024-03-01T12:00:00+02:00; epoch numbers and infinity are refused"
	}
	return ""
}

// zoneSuffix matches text ending in a UTC offset or a zone name.
const zoneSuffix = `([A-Za-z]|[+-][0-9][0-9](:?[0-9][0-9])?)$`

// timeExpr parses the text column q as a value of the time type t. A value
// with a UTC offset or zone is converted to UTC (also for plain timestamps,
// whose offset DuckDB would otherwise drop); a value without one is UTC.
// With try, a bad value gives NULL instead of an error.
//
// Text with a '+' past its first character or a '-' after a ':' carries a
// numeric offset and goes through ICU's TIMESTAMPTZ cast, which applies it.
// Other text is first read with DuckDB's plain TIMESTAMP cast: it cannot drop
// an offset there, accepts no zone name but UTC, and costs a fraction of the
// regular expression and of ICU. Only what it rejects (zone names,
// infinities, bad values) takes the general path: ICU for text ending in a
// zone name, the plain cast (failing, or NULL with try) otherwise. Text the
// plain cast reads never reaches ICU, which in DuckDB 1.5 reads text without
// a zone in the zone that an earlier row of the same batch named.
func timeExpr(q, t string, try bool) string {
	cast := "CAST"
	if try {
		cast = "TRY_CAST"
	}
	offset := fmt.Sprintf("(strpos(%[1]s, '+') > 1 OR %[1]s LIKE '%%:%%-%%')", q)
	zone := fmt.Sprintf("(%s OR regexp_matches(%s, '%s'))", offset, q, zoneSuffix)
	// make_timestamp(epoch_us(x)) and make_timestamptz(epoch_us(x)) give
	// the UTC wall clock or instant of x without ICU; infinities become NULL.
	fast := fmt.Sprintf("epoch_us(TRY_CAST(%s AS TIMESTAMP))", q)
	var general string
	if t == catalog.TypeTimestampTZ {
		fast = "make_timestamptz(" + fast + ")"
		general = fmt.Sprintf("%s(CASE WHEN %s THEN %s ELSE %s || 'Z' END AS TIMESTAMPTZ)", cast, zone, q, q)
	} else {
		fast = "make_timestamp(" + fast + ")"
		general = fmt.Sprintf("CASE WHEN %s THEN make_timestamp(epoch_us(%s(%s AS TIMESTAMPTZ))) ELSE %s(%s AS TIMESTAMP) END",
			zone, cast, q, cast, q)
	}
	// Infinities, which the fast path leaves to the general one, are
	// refused: a plain timestamp would store them as NULL, TIMESTAMPTZ as
	// the largest or smallest instant.
	bad := "NULL"
	if !try {
		bad = "error('timestore: infinite time')"
	}
	general = fmt.Sprintf("CASE WHEN %s ILIKE '%%inf%%' THEN %s ELSE %s END", q, bad, general)
	return fmt.Sprintf("coalesce(CASE WHEN NOT %s THEN %s END, %s)", offset, fast, general)
}

// isTime reports whether a column type is a timestamp type.
func isTime(t string) bool {
	return t == catalog.TypeTimestamp || t == catalog.TypeTimestampTZ
}
