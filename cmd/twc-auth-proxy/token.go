package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"go.uber.org/zap"
)

// runToken is `twc-auth-proxy token --config FILE`: print a fresh
// service-account ID token and nothing else on stdout, for scripts:
//
//	curl -H "Authorization: Token $(twc-auth-proxy token --config c.yaml)" ...
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("twc-auth-proxy token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path to the YAML config file (with service_account enabled)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if cfg.service == nil {
		return errors.New("token: service_account.enabled is not true in the config")
	}
	client, err := authHTTPClient(cfg)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	// The returned error says what failed; logs would only repeat it.
	log := zap.NewNop()
	m := proxy.NewMetrics(prometheus.NewRegistry())
	auth := proxy.NewAuthServer(cfg.auth, client, log, m)
	ctx, cancel := context.WithTimeout(ctx, 3*cfg.auth.Timeout)
	defer cancel()
	if err := auth.Discover(ctx); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	tok, err := proxy.NewServiceAccount(*cfg.service, auth, log, m).Token(ctx)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
