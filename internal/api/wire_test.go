package api

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/ingest"
	"timestore/internal/jobs"
	"timestore/internal/retention"
)

// The Go client (internal/client) imports nothing of the server, so that it
// can serve as a stand-alone SDK; its wire types repeat the server's. This
// test keeps the two from drifting apart: every JSON key a client type reads
// or sends must exist on the server's side of the same message, with the same
// kind of JSON value (a renamed or retyped field fails here, not at a user).
// The client may leave out keys it does not need.
func TestClientWireTypesMatchServer(t *testing.T) {
	t.Parallel()
	type holdAnswer = retention.HoldResult
	pairs := []struct {
		name           string
		client, server any
		// clientOnly are the client's keys this message lacks.
		clientOnly []string
	}{
		{"dataset", client.Dataset{}, DatasetResponse{}, nil},
		{"create dataset request", client.CreateDataset{}, CreateDatasetRequest{}, nil},
		{"column", client.Column{}, catalog.Column{}, nil},
		{"ingest result", client.IngestResult{}, ingest.Result{}, nil},
		{"query request", client.QueryRequest{}, QueryRequest{}, nil},
		{"partition", client.Partition{}, PartitionInfo{}, nil},
		{"export", client.Export{}, ExportInfo{}, nil},
		{"job", client.Job{}, jobs.JobInfo{}, nil},
		{"audit entry", client.AuditEntry{}, catalog.AuditEntry{}, nil},
		{"hold (add)", client.Hold{}, holdAnswer{}, nil},
		// removed_partitions is only in the answer of AddHold.
		{"hold (list, release)", client.Hold{}, catalog.Hold{}, []string{"removed_partitions"}},
		{"restore", client.Restored{}, retention.RestoreResult{}, nil},
		// Status comes from the HTTP status line.
		{"error", client.Error{}, ErrorBody{}.Error, []string{"Status"}},
	}
	for _, p := range pairs {
		c, s := wireShape(reflect.TypeOf(p.client)), wireShape(reflect.TypeOf(p.server))
		var problems []string
		for key, kind := range c {
			sk, ok := s[key]
			switch {
			case slices.Contains(p.clientOnly, key):
			case !ok:
				problems = append(problems, key+": not sent by the server")
			case sk != kind && sk != "any" && kind != "any":
				problems = append(problems, key+": client reads "+kind+", server sends "+sk)
			}
		}
		sort.Strings(problems)
		if len(problems) > 0 {
			t.Errorf("%s: %T against %T:\n  %s", p.name, p.client, p.server, strings.Join(problems, "\n  "))
		}
	}
}

// TestWireShape checks the helper on a mismatch it must report.
func TestWireShape(t *testing.T) {
	t.Parallel()
	type inner struct {
		N int `json:"n"`
	}
	type a struct {
		ID    int64      `json:"id"`
		When  time.Time  `json:"when"`
		Opt   *time.Time `json:"opt,omitempty"`
		Items []inner    `json:"items"`
		Skip  string     `json:"-"`
		inner
	}
	got := wireShape(reflect.TypeOf(a{}))
	want := map[string]string{"id": "number", "when": "string", "opt": "string", "items": "array", "items[].n": "number", "n": "number"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("wireShape = %v, want %v", got, want)
	}
}

var (
	timeType    = reflect.TypeOf(time.Time{})
	rawType     = reflect.TypeOf(json.RawMessage{})
	marshalerTy = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
)

// wireShape maps the JSON keys of a struct type (nested ones as
// "outer.inner", elements of arrays as "outer[].inner") to the kind of JSON
// value: string, number, bool, array, object or any. Embedded structs are
// flattened and untagged fields keep their Go name, as encoding/json does.
func wireShape(t reflect.Type) map[string]string {
	out := map[string]string{}
	addStruct(out, "", t)
	return out
}

func addStruct(out map[string]string, prefix string, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			addStruct(out, prefix, ft)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		key := prefix + name
		kind := jsonKind(ft)
		out[key] = kind
		switch {
		case kind == "object" && ft.Kind() == reflect.Struct:
			addStruct(out, key+".", ft)
		case kind == "array":
			et := ft.Elem()
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct && jsonKind(et) == "object" {
				addStruct(out, key+"[].", et)
			}
		}
	}
}

func jsonKind(t reflect.Type) string {
	switch {
	case t == timeType:
		return "string"
	case t == rawType, t.Kind() == reflect.Interface, reflect.PointerTo(t).Implements(marshalerTy) || t.Implements(marshalerTy):
		return "any"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return "any"
}
