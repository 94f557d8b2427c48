package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/bulwark-ai/bulwark/internal/app"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

// runServe is load the config, set up the process (GC, metrics registry,
// tracing), build the service with app.New and run it.
func runServe(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) error {
	cfg, err := config.Load(args, os.Environ(), stderr)
	if err != nil {
		return &exitError{2, err}
	}
	logger := newLogger(cfg, stderr)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	tracing, err := telemetry.Setup(ctx)
	if err != nil {
		return &exitError{2, err}
	}
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(shutCtx); err != nil {
			logger.Warn("traces not fully exported", "error", err)
		}
	}()
	if tracing.Enabled {
		logger.Info("tracing on (OTLP)", "endpoint_set", true)
	}

	a, err := app.New(ctx, cfg, app.Deps{Logger: logger, Registry: reg, Pepper: os.Getenv("BULWARK_KEY_PEPPER"),
		ModerationToken: os.Getenv("BULWARK_MODERATION_TOKEN"), Tracing: tracing, Version: version})
	if err != nil {
		return configExit(err)
	}
	defer a.Close(ctx)
	return a.Run(ctx)
}

// configExit gives an error the configuration caused exit status 2.
func configExit(err error) error {
	var ce *app.ConfigError
	if errors.As(err, &ce) {
		return &exitError{2, err}
	}
	return err
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
