package api

import (
	"bufio"
	"net/http"
)

// flushWriter buffers a streamed response and flushes it to the client every
// flushEvery bytes, so large results stream without a write per value.
type flushWriter struct {
	*bufio.Writer
	w http.ResponseWriter
}

const flushEvery = 64 << 10

func newFlushWriter(w http.ResponseWriter) *flushWriter {
	return &flushWriter{Writer: bufio.NewWriterSize(flushTo{w}, flushEvery), w: w}
}

// Flush writes the buffer and flushes the connection.
func (f *flushWriter) Flush() error {
	if err := f.Writer.Flush(); err != nil {
		return err
	}
	http.NewResponseController(f.w).Flush()
	return nil
}

type flushTo struct{ w http.ResponseWriter }

func (t flushTo) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err == nil {
		http.NewResponseController(t.w).Flush()
	}
	return n, err
}
