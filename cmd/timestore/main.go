// Command timestore runs the timestore server and its client commands.
package main

import (
	"context"
	"os"

	"timestore/internal/cli"
)

func main() {
	os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
