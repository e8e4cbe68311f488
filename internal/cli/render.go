package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// jsonValue is a decoded JSON value that keeps the order of object keys, so
// that a plan is shown in the order the server wrote it.
type jsonValue struct {
	object []jsonMember // an object (obj true)
	array  []jsonValue  // an array (arr true)
	scalar any          // anything else
	obj    bool
	arr    bool
}

type jsonMember struct {
	key   string
	value jsonValue
}

func decodeOrdered(raw []byte) (jsonValue, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return decodeValue(dec)
}

func decodeValue(dec *json.Decoder) (jsonValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return jsonValue{}, err
	}
	switch tok {
	case json.Delim('{'):
		v := jsonValue{obj: true}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return v, err
			}
			m, err := decodeValue(dec)
			if err != nil {
				return v, err
			}
			v.object = append(v.object, jsonMember{key: fmt.Sprint(k), value: m})
		}
		_, err = dec.Token()
		return v, err
	case json.Delim('['):
		v := jsonValue{arr: true}
		for dec.More() {
			m, err := decodeValue(dec)
			if err != nil {
				return v, err
			}
			v.array = append(v.array, m)
		}
		_, err = dec.Token()
		return v, err
	}
	return jsonValue{scalar: tok}, nil
}

// text renders a value on one line: scalars as they are, others as compact JSON.
func (v jsonValue) text() string {
	switch {
	case v.obj, v.arr:
		var b strings.Builder
		v.compact(&b)
		s := b.String()
		if len(s) > 60 {
			s = s[:57] + "..."
		}
		return s
	case v.scalar == nil:
		return "-"
	}
	return fmt.Sprint(v.scalar)
}

func (v jsonValue) compact(b *strings.Builder) {
	switch {
	case v.obj:
		b.WriteByte('{')
		for i, m := range v.object {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(m.key + ":")
			m.value.compact(b)
		}
		b.WriteByte('}')
	case v.arr:
		b.WriteByte('[')
		for i, m := range v.array {
			if i > 0 {
				b.WriteByte(',')
			}
			m.compact(b)
		}
		b.WriteByte(']')
	default:
		b.WriteString(v.text())
	}
}

// isTable reports whether v is a non-empty array of objects.
func (v jsonValue) isTable() bool {
	if !v.arr || len(v.array) == 0 {
		return false
	}
	for _, e := range v.array {
		if !e.obj {
			return false
		}
	}
	return true
}

// renderHuman writes a JSON document (a dry-run plan, a job's summary) for
// people: the scalars of each object as "key: value" lines (nested objects
// with dotted keys), each array of objects as a titled table with one
// column per key, an empty array as "key: none".
func renderHuman(w io.Writer, raw []byte) error {
	v, err := decodeOrdered(raw)
	if err != nil {
		return fmt.Errorf("decode the server's answer: %w", err)
	}
	if !v.obj {
		_, err := fmt.Fprintln(w, v.text())
		return err
	}
	var tables []jsonMember
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var lines func(prefix string, o jsonValue)
	lines = func(prefix string, o jsonValue) {
		for _, m := range o.object {
			switch {
			case m.value.obj && len(m.value.object) > 0:
				lines(prefix+m.key+".", m.value)
			case m.value.isTable():
				tables = append(tables, jsonMember{key: prefix + m.key, value: m.value})
			case m.value.arr && len(m.value.array) == 0:
				fmt.Fprintf(tw, "%s%s:\tnone\n", prefix, m.key)
			case m.value.arr:
				// A list of scalars (notes, ids): all of it, one item a line.
				for i, e := range m.value.array {
					key := prefix + m.key + ":"
					if i > 0 {
						key = ""
					}
					fmt.Fprintf(tw, "%s\t%s\n", key, e.text())
				}
			default:
				fmt.Fprintf(tw, "%s%s:\t%s\n", prefix, m.key, m.value.text())
			}
		}
	}
	lines("", v)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range tables {
		fmt.Fprintf(w, "\n%s (%d):\n", t.key, len(t.value.array))
		var cols []string
		for _, row := range t.value.array {
			for _, m := range row.object {
				if !contains(cols, m.key) {
					cols = append(cols, m.key)
				}
			}
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
		for _, row := range t.value.array {
			cells := make([]string, len(cols))
			for i, c := range cols {
				cells[i] = "-"
				for _, m := range row.object {
					if m.key == c {
						cells[i] = m.value.text()
					}
				}
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
