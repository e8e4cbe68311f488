package engine

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// allowedTableFunctions are the table functions a query may call. A query
// reads its dataset (a view); these only generate or unfold values. Every
// other table function is refused, because some change the instance for
// the queries that reuse it: enable_logging() logs later queries' text (of
// other clients) and, logging to a file it may not write, aborts the
// process when the next query ends; duckdb_settings() shows server paths.
// read_parquet and parquet_scan can read the dataset's own files only
// (allowed_paths).
var allowedTableFunctions = []string{"range", "generate_series", "unnest", "json_each", "json_tree", "read_parquet", "parquet_scan"}

// deniedScalarFunctions are scalar functions a query may not call.
var deniedScalarFunctions = map[string]string{
	"current_setting": "settings are not available to queries",
}

// checkReferences refuses a query that calls a table function outside
// allowedTableFunctions, reads one of DuckDB's system views or calls a
// denied scalar function, anywhere in it (subqueries, CTEs, lateral joins).
// It walks the parsed statement (json_serialize_sql: parsed, not bound, so
// it runs before anything in the query can act); an EXPLAIN is checked as
// the query it explains. A statement that does not serialize passes here:
// the caller's Prepare and statement checks refuse it.
func checkReferences(ctx context.Context, conn *duckdb.Conn, q string) error {
	body := q
	if w := leadingWords(q, 2); len(w) > 0 && w[0] == "EXPLAIN" {
		body = skipWord(skipSpaceAndComments(body))
		if len(w) > 1 && w[1] == "ANALYZE" {
			body = skipWord(skipSpaceAndComments(body))
		}
	}
	tree, err := serializeSQL(ctx, conn, body)
	if err != nil {
		return err
	}
	var ast any
	if err := json.Unmarshal([]byte(tree), &ast); err != nil {
		return fmt.Errorf("query: parse the serialized statement: %w", err)
	}
	if m, ok := ast.(map[string]any); ok && m["error"] == true {
		// Not a statement that serializes (a parse error, several
		// statements, not a SELECT): Prepare reports it, and the statement
		// checks refuse what is not one SELECT.
		return nil
	}
	return walkReferences(ast)
}

// walkReferences returns the first refused reference in the parsed tree.
func walkReferences(node any) error {
	switch n := node.(type) {
	case map[string]any:
		switch n["type"] {
		case "TABLE_FUNCTION":
			if f, ok := n["function"].(map[string]any); ok {
				name := strings.ToLower(fmt.Sprint(f["function_name"]))
				if !slices.Contains(allowedTableFunctions, name) {
					return &SQLError{Message: fmt.Sprintf("table function %s is not allowed: a query reads its dataset, and may use %s",
						name, strings.Join(allowedTableFunctions, ", "))}
				}
			}
		case "BASE_TABLE":
			schema := strings.ToLower(fmt.Sprint(n["schema_name"]))
			table := strings.ToLower(fmt.Sprint(n["table_name"]))
			if strings.HasPrefix(table, "duckdb_") || schema == "information_schema" || schema == "pg_catalog" ||
				strings.HasPrefix(table, "pg_") || fmt.Sprint(n["catalog_name"]) == "system" {
				return &SQLError{Message: fmt.Sprintf("system table %s is not available: a query reads its dataset", table)}
			}
		}
		if n["class"] == "FUNCTION" {
			if why, ok := deniedScalarFunctions[strings.ToLower(fmt.Sprint(n["function_name"]))]; ok {
				return &SQLError{Message: fmt.Sprintf("%v: %s", n["function_name"], why)}
			}
		}
		for _, v := range n {
			if err := walkReferences(v); err != nil {
				return err
			}
		}
	case []any:
		for _, v := range n {
			if err := walkReferences(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// serializeSQL returns DuckDB's JSON rendering of the parsed statement q.
func serializeSQL(ctx context.Context, conn *duckdb.Conn, q string) (string, error) {
	rows, err := conn.QueryContext(ctx, "SELECT CAST(json_serialize_sql(CAST($1 AS VARCHAR)) AS VARCHAR)",
		[]driver.NamedValue{{Ordinal: 1, Value: q}})
	if err != nil {
		return "", fmt.Errorf("query: serialize the statement: %w", err)
	}
	defer rows.Close()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		if errors.Is(err, io.EOF) {
			return "", errors.New("query: serialize the statement: no result")
		}
		return "", fmt.Errorf("query: serialize the statement: %w", err)
	}
	s, ok := dest[0].(string)
	if !ok {
		return "", fmt.Errorf("query: serialize the statement: a %T", dest[0])
	}
	return s, nil
}

// skipWord drops the leading word of q.
func skipWord(q string) string {
	i := 0
	for i < len(q) && (q[i] == '_' || q[i] >= 'a' && q[i] <= 'z' || q[i] >= 'A' && q[i] <= 'Z') {
		i++
	}
	return q[i:]
}
