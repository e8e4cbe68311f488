// Package cli is timestore's command line: the server commands (serve,
// migrate) and the client commands that talk to a server over HTTP. One file
// per command group.
package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"timestore/internal/client"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the server or the operation failed
	ExitUsage   = 2 // bad flags, arguments or input
)

// usageError marks an error as the caller's mistake (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// globals are the flags shared by client commands.
type globals struct {
	server       string
	token        string
	tokenFlagSet bool
	output       string
	stdin        io.Reader
	stdout       io.Writer
	stderr       io.Writer
	// interactive: stdin is a terminal, so a destructive command may ask
	// for confirmation (see confirm).
	interactive bool
}

func (g *globals) client() *client.Client { return client.New(g.server, g.token) }

// NewRoot returns the root command. Its standard input is taken as not a
// terminal: destructive commands need --yes (see ExecuteIO).
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	return newRoot(&globals{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr})
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "timestore",
		Short:         "timestore stores time-series datasets as Parquet and keeps them compact, bounded and exportable",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("TIMESTORE_SERVER", "http://127.0.0.1:8080"), "server URL (env TIMESTORE_SERVER)")
	pf.StringVar(&g.token, "token", os.Getenv("TIMESTORE_TOKEN"), "bearer token (env TIMESTORE_TOKEN)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or csv")

	root.AddCommand(
		newServeCmd(g),
		newMigrateCmd(g),
		newConfigCmd(g),
		newDatasetCmd(g),
		newIngestCmd(g),
		newQueryCmd(g),
		newPartitionsCmd(g),
		newMaintenanceCmd(g),
		newJobsCmd(g),
		newAuditCmd(g),
		newHoldsCmd(g),
		newExportsCmd(g),
	)
	for _, c := range root.Commands() {
		strictGroups(c)
		if c.Annotations[serverCommand] != "" {
			// The client's flags (--server, --token, -o) are refused
			// there; their help does not offer them.
			c.SetUsageTemplate(strings.Replace(c.UsageTemplate(), globalFlagsSection, "", 1))
		}
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		g.tokenFlagSet = cmd.Flags().Changed("token")
		if cmd.Annotations[serverCommand] != "" {
			// The client's flags mean nothing to a server command; silently
			// ignoring --token would leave an operator believing the API is
			// protected.
			for _, name := range []string{"server", "token", "output"} {
				if cmd.Flags().Changed(name) {
					return usagef("%s: --%s is a client flag; the server reads its configuration from --config, the environment (TIMESTORE_TOKEN, TIMESTORE_ADMIN_TOKEN, ...) and its own flags (see timestore %s --help)", cmd.Name(), name, cmd.Name())
				}
			}
			return nil
		}
		switch g.output {
		case "table", "json", "csv":
		default:
			return usagef("output format %q: want table, json or csv", g.output)
		}
		server, err := client.ServerURL(g.server)
		if err != nil {
			return usagef("--server (or TIMESTORE_SERVER): %v", err)
		}
		g.server = server
		return nil
	}
	return root
}

// globalFlagsSection is the part of cobra's usage template that lists the
// inherited flags.
const globalFlagsSection = `{{if .HasAvailableInheritedFlags}}

Global Flags:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}`

// serverCommand annotates the commands that run the server side (serve,
// migrate, config) rather than talk to a server.
const serverCommand = "timestore/server-command"

// strictGroups makes a command group (a command with subcommands and no
// action of its own) print its help when called alone and refuse an unknown
// subcommand as a usage error (exit 2); cobra would print the help and exit 0.
// Commands with wrong arguments print their usage line with the error.
func strictGroups(c *cobra.Command) {
	if !c.HasSubCommands() {
		// A command called with the wrong arguments shows how to call it.
		if check := c.Args; check != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usagef("%v\nusage: %s", err, cmd.UseLine())
				}
				return nil
			}
		}
		return
	}
	if c.Run == nil && c.RunE == nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
}

// Execute runs the CLI with args and returns the process exit code. Its
// standard input is taken as not a terminal (destructive commands need
// --yes); the timestore command uses ExecuteIO with os.Stdin.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return ExecuteIO(ctx, args, strings.NewReader(""), stdout, stderr)
}

// ExecuteIO is Execute reading confirmations from stdin, when stdin is a
// terminal.
func ExecuteIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return execute(ctx, &globals{stdin: stdin, interactive: isTerminal(stdin), stdout: stdout, stderr: stderr}, args)
}

// isTerminal reports whether r is a terminal: a character device other than
// /dev/null.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

func execute(ctx context.Context, g *globals, args []string) int {
	stderr := g.stderr
	root := newRoot(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "timestore:", err.Error())
	var unreachable *client.UnreachableError
	if errors.As(err, &unreachable) {
		fmt.Fprintln(stderr, "timestore: is the server running there? Start it with `timestore serve`, or point the CLI at it with --server or TIMESTORE_SERVER.")
	}
	var ue usageError
	switch {
	case errors.As(err, &ue), client.IsClientError(err):
		return ExitUsage
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "accepts "),
		strings.HasPrefix(err.Error(), "requires "), strings.Contains(err.Error(), "required flag"):
		return ExitUsage
	}
	return ExitFailure
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// table is output in one of the formats of -o.
type table struct {
	header []string
	rows   [][]string
	// raw is printed as JSON for -o json.
	raw any
}

func (g *globals) print(t table) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(t.raw)
	case "csv":
		w := csv.NewWriter(g.stdout)
		w.Write(t.header)
		w.WriteAll(t.rows)
		return w.Error()
	case "table", "":
		tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(t.header, "\t")))
		for _, r := range t.rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	default:
		return usagef("output format %q: want table, json or csv", g.output)
	}
}

// printObject prints one object: JSON for -o json, else key/value lines.
func (g *globals) printObject(v any, kv [][2]string) error {
	if g.output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	for _, p := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

// count renders n things: "1 row", "2 rows".
func count(n int64, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// humanBytes renders n bytes with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
