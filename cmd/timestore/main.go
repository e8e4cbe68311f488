// Command timestore runs the timestore server and its client commands.
package main

import (
	"context"
	"os"

	"timestore/internal/cli"
)

func main() {
	os.Exit(cli.ExecuteIO(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
