package cli

import (
	"bufio"
	"fmt"
	"strings"
)

// confirm guards a destructive command. With --yes it goes ahead. Without
// it, on a terminal it asks the question and goes ahead only on "y" or
// "yes"; off a terminal (a script, a pipe) nobody can answer, so it refuses
// with a usage error that says to pass --yes.
func (g *globals) confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	if !g.interactive {
		return usagef("%s: refusing without --yes, because standard input is not a terminal to confirm on; pass --yes to go ahead", question)
	}
	fmt.Fprintf(g.stderr, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(g.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return usagef("%s: not confirmed; nothing changed", question)
}
