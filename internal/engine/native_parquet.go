package engine

import (
	"bufio"
	"fmt"
	"os"
	"reflect"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/deprecated"
	"github.com/parquet-go/parquet-go/format"

	"timestore/internal/catalog"
)

// orderedGroup is a Parquet group whose fields keep the schema's order
// (parquet.Group, a map, orders them by name).
type orderedGroup struct {
	parquet.Group
	fields []parquet.Field
}

func (g orderedGroup) Fields() []parquet.Field { return g.fields }

// namedField is one field of an orderedGroup. Rows are written as
// parquet.Row values, so Value (reflection on Go values) is not used.
type namedField struct {
	parquet.Node
	name string
}

func (f namedField) Name() string { return f.name }

func (f namedField) Value(reflect.Value) reflect.Value { return reflect.Value{} }

// convertedOnly is a physical type annotated with a converted type and no
// logical type, as DuckDB annotates integers.
type convertedOnly struct {
	parquet.Type
	converted deprecated.ConvertedType
}

func (t convertedOnly) LogicalType() *format.LogicalType { return nil }

func (t convertedOnly) ConvertedType() *deprecated.ConvertedType { return &t.converted }

// nativeNode is the Parquet node of a column type, as DuckDB's writer
// declares it: every column optional, timestamps in microseconds (adjusted
// to UTC for TIMESTAMPTZ), strings as UTF-8 byte arrays.
func nativeNode(typ string) (parquet.Node, error) {
	var n parquet.Node
	switch typ {
	case catalog.TypeTimestamp:
		n = parquet.TimestampAdjusted(parquet.Microsecond, false)
	case catalog.TypeTimestampTZ:
		n = parquet.TimestampAdjusted(parquet.Microsecond, true)
	case catalog.TypeBigint:
		n = parquet.Leaf(convertedOnly{parquet.Int64Type, deprecated.Int64})
	case catalog.TypeInteger:
		n = parquet.Leaf(convertedOnly{parquet.Int32Type, deprecated.Int32})
	case catalog.TypeDouble:
		n = parquet.Leaf(parquet.DoubleType)
	case catalog.TypeBoolean:
		n = parquet.Leaf(parquet.BooleanType)
	case catalog.TypeVarchar:
		n = parquet.Leaf(convertedOnly{parquet.ByteArrayType, deprecated.UTF8})
	default:
		return nil, fmt.Errorf("column type %q", typ)
	}
	return parquet.Optional(n), nil
}

// nativeSchema is the Parquet schema of ds's files.
func nativeSchema(ds catalog.Dataset) (*parquet.Schema, error) {
	g := orderedGroup{Group: parquet.Group{}}
	for _, c := range ds.Columns {
		n, err := nativeNode(c.Type)
		if err != nil {
			return nil, err
		}
		g.Group[c.Name] = n
		g.fields = append(g.fields, namedField{Node: n, name: c.Name})
	}
	return parquet.NewSchema("duckdb_schema", g), nil
}

// writeNativeParquet writes rows (sorted) into a new zstd Parquet file at
// path, one row group, data pages of format version 2, and returns its
// size.
func writeNativeParquet(ds catalog.Dataset, rows []nativeRow, path string) (int64, error) {
	schema, err := nativeSchema(ds)
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 64<<10)
	w := parquet.NewWriter(bw, schema, parquet.Compression(&parquet.Zstd), parquet.DataPageVersion(2))
	types := make([]string, len(ds.Columns))
	for i, c := range ds.Columns {
		types[i] = c.Type
	}
	buf := make([]parquet.Row, 0, 256)
	flush := func() error {
		_, err := w.WriteRows(buf)
		buf = buf[:0]
		return err
	}
	for _, r := range rows {
		pr := make(parquet.Row, len(types))
		for c, v := range r.vals {
			pr[c] = nativeParquetValue(types[c], v).Level(0, 1, c)
			if v.null {
				pr[c] = parquet.NullValue().Level(0, 0, c)
			}
		}
		buf = append(buf, pr)
		if len(buf) == cap(buf) {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func nativeParquetValue(typ string, v nativeValue) parquet.Value {
	switch {
	case typ == catalog.TypeVarchar:
		return parquet.ByteArrayValue([]byte(v.s))
	case typ == catalog.TypeDouble:
		return parquet.DoubleValue(v.f)
	case typ == catalog.TypeBoolean:
		return parquet.BooleanValue(v.b)
	case typ == catalog.TypeInteger:
		return parquet.Int32Value(int32(v.i))
	}
	return parquet.Int64Value(v.i)
}
