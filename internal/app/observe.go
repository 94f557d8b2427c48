package app

import (
	"fmt"
	"time"

	"github.com/bulwark-ai/bulwark/internal/alert"
	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/quality"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/internal/usage"
)

// alertConfig maps the serve flags onto the alert notifier's Config.
func alertConfig(cfg config.Config, name func(string) string) alert.Config {
	burst := cfg.AlertInjectionBurst
	if burst == 0 {
		burst = -1 // off
	}
	return alert.Config{
		WebhookURL:      cfg.AlertWebhookURL,
		Timeout:         cfg.AlertWebhookTimeout,
		MinInterval:     cfg.AlertMinInterval,
		MaxPerMinute:    cfg.AlertMaxPerMinute,
		InjectionBurst:  burst,
		InjectionWindow: cfg.AlertInjectionWindow,
		PrincipalName:   name,
	}
}

var keyChangeTypes = map[string]string{
	identity.KeyCreated: audit.TypeKeyCreated,
	identity.KeyRevoked: audit.TypeKeyRevoked,
	identity.KeyRemoved: audit.TypeKeyRemoved,
	identity.KeyChanged: audit.TypeKeyChanged,
}

// keyChangeRecord is the audit record of an API key change the server saw:
// who the key authenticates and what became of it, never the key or hash.
func keyChangeRecord(c identity.KeyChange) audit.Record {
	d := map[string]any{"key_id": c.ID, "source": c.Source}
	if c.Status != "" {
		d["status"] = c.Status
	}
	if len(c.Roles) > 0 {
		d["roles"] = c.Roles
	}
	if len(c.Fields) > 0 {
		d["fields"] = c.Fields
	}
	r := audit.Record{Type: keyChangeTypes[c.Action], Details: d}
	if c.Principal != "" {
		r.Principal = &audit.Principal{ID: c.Principal, Kind: string(identity.KindAPIKey), Tenant: c.Tenant}
	}
	return r
}

// breakerRecord is the audit record of the limiter entering (breaker open)
// or leaving (closed) its fallback.
func breakerRecord(s ratelimit.BreakerState, cfg config.Config) audit.Record {
	state := "left"
	if s == ratelimit.BreakerOpen {
		state = "entered"
	}
	return audit.Record{Type: audit.TypeLimiterFallback, Time: time.Now().UTC(), Details: map[string]any{
		"state": state, "breaker": s.String(), "failure_mode": cfg.RateLimitFailureMode, "local_share": cfg.RateLimitLocalShare,
	}}
}

// qualityAlert raises alert.EventQualityJump when a model's refusal or
// error rate jumps over its baseline (quality.Monitor).
func qualityAlert(n *alert.Notifier) func(quality.Jump) {
	return func(j quality.Jump) {
		n.Notify(alert.Alert{Event: alert.EventQualityJump, Severity: "warning", Subject: j.Model + "/" + j.Signal,
			Summary: fmt.Sprintf("model %s: %s rate %.0f%% of recent answers, over its baseline of %.0f%% (%d answers seen)",
				j.Model, j.Signal, 100*j.Rate, 100*j.Baseline, j.Answers),
			Details: map[string]any{"model": j.Model, "signal": j.Signal, "rate": j.Rate, "baseline": j.Baseline, "answers": j.Answers}})
	}
}

// budgetRecord is the audit record of a tenant budget threshold crossed
// (the alert tap turns it into a budget_threshold alert).
func budgetRecord(b usage.BudgetAlert) audit.Record {
	return audit.Record{Type: audit.TypeBudgetThreshold, Time: time.Now().UTC(), Details: map[string]any{
		"tenant": b.Tenant, "period": b.Period, "percent": b.Percent, "spent_usd": b.SpentUSD, "budget_usd": b.BudgetUSD,
		"period_start": b.PeriodStart.Format(time.RFC3339),
	}}
}
