package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// decodeObject decodes the JSON object b into the struct v points to,
// strictly: an unknown field is an error listing the known ones, and every
// error names the field's path from the policy's root ("policy.retention.max_age").
// A field tagged `policy:"size"` accepts a size with a unit (ParseSize).
// Keys match the JSON names exactly or, as encoding/json does, ignoring case.
func decodeObject(path string, b []byte, v reflect.Value) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("%s: must be a JSON object (%s), not %s", path, example(v.Type()), truncate(string(b), 40))
	}
	t := v.Type()
	fields := jsonFields(t)
	used := make(map[string]bool, len(obj))
	for _, f := range fields {
		key, ok := f.name, false
		if _, ok = obj[key]; !ok {
			// encoding/json's case-insensitive match, in key order for a stable result.
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				if strings.EqualFold(k, f.name) {
					key, ok = k, true
					break
				}
			}
		}
		if !ok {
			continue
		}
		used[key] = true
		if err := decodeField(path+"."+f.name, obj[key], v.Field(f.index), f.size); err != nil {
			return err
		}
	}
	var unknown []string
	for k := range obj {
		if !used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = f.name
		}
		return fmt.Errorf("%s.%s: unknown field; the fields of %s are %s (see docs/policy.md)",
			path, truncate(unknown[0], 40), path, strings.Join(names, ", "))
	}
	return nil
}

// decodeField decodes one field's JSON value into v.
func decodeField(path string, b []byte, v reflect.Value, size bool) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		// As encoding/json: null leaves the field unset.
		return nil
	}
	switch {
	case size:
		n, err := decodeSize(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		v.SetInt(n)
		return nil
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		p := reflect.New(v.Type().Elem())
		if err := decodeObject(path, b, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	if err := json.Unmarshal(b, v.Addr().Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: must be %s, not %s", path, kindName(v.Type()), truncate(string(b), 40))
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// kindName says what a value of type t is written as.
func kindName(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// example is a short valid JSON object of type t, for messages.
func example(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Policy]():
		return `such as {"retention":{"max_age":"30d"}}`
	case reflect.TypeFor[Compaction]():
		return `such as {"target_file_bytes":"128MiB"}`
	case reflect.TypeFor[Retention]():
		return `such as {"max_age":"30d"}`
	case reflect.TypeFor[Export]():
		return `such as {"target":"remote","after":"7d"}`
	}
	return "{…}"
}

// jsonField is one field of a policy struct as it is written in JSON.
type jsonField struct {
	name  string
	index int
	size  bool
}

// jsonFields lists the JSON fields of struct type t in declaration order.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, index: i, size: f.Tag.Get("policy") == "size"})
	}
	return out
}

// FieldPaths lists every field of the policy document by its dotted JSON
// path ("retention.max_age"), sections included, in declaration order. The
// documentation test checks that docs/policy.md describes each one.
func FieldPaths() []string {
	var out []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for _, f := range jsonFields(t) {
			ft := t.Field(f.index).Type
			path := prefix + f.name
			out = append(out, path)
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(path+".", ft)
			}
		}
	}
	walk("", reflect.TypeFor[Policy]())
	return out
}
