package jobs

import (
	"context"
	"log/slog"
	"strings"
)

// riverLogHandler passes River's log records on, demoting the routine ones
// that River logs at info level on every cycle (a producer's job counts
// every few seconds, each maintenance service's "Ran successfully") to
// debug: at info, a quiet server's log would be mostly those. Everything
// else, including River's job errors, keeps its level.
type riverLogHandler struct{ next slog.Handler }

// routineRiverMessage reports whether a River info message is routine.
func routineRiverMessage(msg string) bool {
	return strings.HasSuffix(msg, ": Producer job counts") || strings.Contains(msg, ": Ran successfully")
}

func (h riverLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// A record's message is not known here; Handle decides for info.
	return h.next.Enabled(ctx, l) || l == slog.LevelInfo && h.next.Enabled(ctx, slog.LevelDebug)
}

func (h riverLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo && routineRiverMessage(r.Message) {
		r.Level = slog.LevelDebug
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h riverLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return riverLogHandler{h.next.WithAttrs(attrs)}
}

func (h riverLogHandler) WithGroup(name string) slog.Handler {
	return riverLogHandler{h.next.WithGroup(name)}
}
