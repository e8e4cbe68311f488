package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// On a terminal a destructive command asks, and goes ahead only on yes.
func TestConfirmOnTerminal(t *testing.T) {
	t.Parallel()
	for answer, ok := range map[string]bool{"y\n": true, "YES\n": true, "n\n": false, "\n": false, "": false, "yess\n": false} {
		var stderr bytes.Buffer
		g := &globals{stdin: strings.NewReader(answer), interactive: true, stderr: &stderr}
		err := g.confirm(false, `delete dataset "cpu" and all its data`)
		require.Equal(t, `delete dataset "cpu" and all its data [y/N] `, stderr.String(), answer)
		if ok {
			require.NoError(t, err, answer)
		} else {
			var ue usageError
			require.True(t, errors.As(err, &ue), answer)
			require.Contains(t, err.Error(), "not confirmed; nothing changed", answer)
		}
	}
	// --yes never asks; off a terminal, without --yes, it refuses without reading.
	var stderr bytes.Buffer
	g := &globals{stdin: strings.NewReader("y\n"), interactive: false, stderr: &stderr}
	require.NoError(t, g.confirm(true, "q"))
	err := g.confirm(false, "release hold 1")
	require.ErrorContains(t, err, "release hold 1: refusing without --yes, because standard input is not a terminal to confirm on; pass --yes to go ahead")
	require.Empty(t, stderr.String())
}
