package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"timestore/internal/config"
	"timestore/internal/server"
	"timestore/internal/telemetry"
)

// serverFlags binds the server configuration flags; flags win over env and file.
type serverFlags struct {
	configFile string
	database   string
	listen     string
	dataDir    string
	fs         *pflag.FlagSet
}

func (f *serverFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.configFile, "config", "timestore.yaml", "configuration file; when not given, ./timestore.yaml is read if present; \"\" reads none")
	fs.StringVar(&f.database, "database-url", "", "catalog database URL (env TIMESTORE_DATABASE_URL)")
	fs.StringVar(&f.listen, "listen", "", "HTTP listen address (env TIMESTORE_LISTEN, default "+config.ListenDefault+")")
	fs.StringVar(&f.dataDir, "data-dir", "", "local target, cache and temp files (env TIMESTORE_DATA_DIR, default "+config.DataDirDefault+")")
}

// load reads and validates the configuration.
func (f *serverFlags) load() (config.Config, error) {
	cfg, err := f.read()
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// read reads the configuration: file, environment, flags.
func (f *serverFlags) read() (config.Config, error) {
	if f.fs != nil && f.fs.Changed("config") && f.configFile != "" {
		// A file named on the command line must be there.
		if _, err := os.Stat(f.configFile); err != nil {
			return config.Config{}, usagef("--config: %v", err)
		}
	}
	cfg, err := config.Load(f.configFile, os.Environ())
	if err != nil {
		return cfg, usageError{err}
	}
	if f.database != "" {
		cfg.DatabaseURL = f.database
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.dataDir != "" {
		cfg.DataDir = f.dataDir
	}
	return cfg, nil
}

func newServeCmd(g *globals) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:         "serve",
		Annotations: map[string]string{serverCommand: "true"},
		Short:       "Run the HTTP API and the lifecycle workers",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.load()
			if err != nil {
				return err
			}
			log, err := telemetry.NewLogger(g.stderr, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			m, err := server.Migrate(ctx, cfg.DatabaseURL)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			if m.Catalog+m.Jobs > 0 {
				log.Info("migrated", "catalog_migrations", m.Catalog, "job_queue_migrations", m.Jobs, "catalog_version", m.CatalogVersion)
			}
			srv, err := server.New(ctx, cfg, log, server.Options{Registry: telemetry.NewRegistry()})
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return err
			}
			return srv.Serve(ctx, ln)
		},
	}
	f.bind(cmd.Flags())
	return cmd
}

func newMigrateCmd(g *globals) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:         "migrate",
		Annotations: map[string]string{serverCommand: "true"},
		Short:       "Apply the catalog migrations (idempotent)",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.load()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			m, err := server.Migrate(ctx, cfg.DatabaseURL)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, m)
			return nil
		},
	}
	f.bind(cmd.Flags())
	return cmd
}

func newConfigCmd(g *globals) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:         "config",
		Annotations: map[string]string{serverCommand: "true"},
		Short:       "Print the effective server configuration, secrets redacted",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Printed even when it is not valid (no database URL, say):
			// that is when one looks at it; the problem follows on stderr.
			cfg, err := f.read()
			if err != nil {
				return err
			}
			fmt.Fprint(g.stdout, server.Effective(cfg).YAML())
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	f.bind(cmd.Flags())
	return cmd
}
