// Package api implements Bulwark's own gRPC API (proto/bulwark/v1): the
// GuardService for callers that are not behind Envoy, and the AdminService
// for operators.
//
// The GuardService is a second front door to the one pipeline: CheckPrompt,
// CheckCompletion and RedactStream drive an ext_proc exchange in-process
// (extproc.Exchange) through exactly the messages Envoy's filter would send,
// honouring mode_override and applying the mutations as Envoy would, so
// identity, detectors, policy, limits, redaction, audit and tracing are the
// Envoy path's own. The caller's credential comes from gRPC metadata and
// becomes the exchange's authorization / x-api-key header; a verified mTLS
// client certificate becomes the peer identity Envoy would report.
//
// Conversion to gRPC status happens in one place (status.go): a decision
// about content is an answer (allowed = false); a refusal of the caller is
// an error (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
// UNAVAILABLE); unusable input is INVALID_ARGUMENT.
//
// The AdminService is guarded by role and tenant: every call authenticates
// the caller through the same identity stage and requires the operator role
// (Config.AdminRole); an operator acts within its own tenant unless it also
// holds Config.CrossTenantRole; every call, refused or not, is audited.
package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// DefaultAdminRole is the role AdminService requires unless configured. It
// is an operator role, deliberately not a role that policies give LLM
// callers ("admin", "user"), so being an administrator of a tenant's LLM use
// never makes a principal an operator of Bulwark.
const DefaultAdminRole = "bulwark-operator"

// DefaultCrossTenantRole is the role that, held together with the admin
// role, lets an operator act on every tenant (see Config.CrossTenantRole).
const DefaultCrossTenantRole = "bulwark-cross-tenant"

// AuditTypeAdminCall is the audit record type of an AdminService call.
const AuditTypeAdminCall = "admin_call"

// Exchanger starts LLM exchanges: the exchange core every door shares, so
// a Guard call and the same request through Envoy get the same decision.
type Exchanger interface {
	Start(door string) *exchange.Session
}

var _ Exchanger = (*exchange.Core)(nil)

// Scanner runs the detectors (ScanText). ScanContext stops when the call
// ends, so a caller that gives up costs no more CPU.
type Scanner interface {
	ScanContext(ctx context.Context, text string) (detect.Result, error)
}

var _ Scanner = (*detect.Scanner)(nil)

// Limiter counts ScanText calls per principal; it is the pipeline's rate
// limiter, so every replica shares the counts.
type Limiter = pipeline.Limiter

// Authenticator resolves credentials to a principal; it is the pipeline's
// identity stage, so both doors agree on who is asking.
type Authenticator = pipeline.Authenticator

// Policies is the policy engine as operators manage it.
type Policies interface {
	Status() policy.Status
	Reload(ctx context.Context) error
}

var _ Policies = (*policy.Engine)(nil)

// Quotas reads and refills the limiter's counters.
type Quotas interface {
	Known(match func(ratelimit.Limit) bool) []ratelimit.Limit
	Peek(ctx context.Context, limits []ratelimit.Limit) ([]ratelimit.LimitState, error)
	Reset(ctx context.Context, limits []ratelimit.Limit) error
}

var _ Quotas = (*ratelimit.Limiter)(nil)

// Auditor records admin calls.
type Auditor = pipeline.Auditor

var _ Auditor = (*audit.Writer)(nil)

// Keys are where API keys are stored, for ListKeys and RevokeKey. Both
// sources may be empty.
type Keys struct {
	// File is the keys file (keys_file); "" when none.
	File string
	// Redis is the Redis key store; nil when none.
	Redis *identity.RedisKeyStore
	// Reload, when set, makes a change to File take effect at once
	// (Authenticator.ReloadKeys); the file watcher would pick it up too.
	Reload func() error
}

// Config tunes both services. The zero value uses the defaults.
type Config struct {
	// MaxBodyBytes bounds a text, prompt or answer a caller may send: the
	// same bound ext_proc inspects (extproc_max_body_bytes). Default
	// exchange.DefaultMaxBodyBytes.
	MaxBodyBytes int
	// AdminRole is the role every AdminService call requires. Default
	// DefaultAdminRole.
	AdminRole string
	// CrossTenantRole, held together with AdminRole, lets an operator act on
	// every tenant's keys and quotas and on what all tenants share
	// (ReloadPolicies). An operator without it acts only within its own
	// tenant (principal.tenant); one with neither it nor a tenant may only
	// read the policy status and manage keys that have no tenant. Default
	// DefaultCrossTenantRole.
	CrossTenantRole string
	// ScanTextMaxBytes bounds the text of one ScanText call: the detectors'
	// work is linear in it, and unlike the exchanges ScanText is not a
	// policy decision, so this and ScanTextPerMinute are what bound a
	// caller's CPU. Default DefaultScanTextMaxBytes (and at most
	// MaxBodyBytes).
	ScanTextMaxBytes int
	// ScanTextPerMinute is how many ScanText calls one principal may make
	// per minute (burst included), counted by the rate limiter every
	// replica shares. Default DefaultScanTextPerMinute.
	ScanTextPerMinute int
}

// Defaults of the ScanText bounds (guard_scan_max_bytes, guard_scan_per_minute).
const (
	DefaultScanTextMaxBytes  = 1 << 20
	DefaultScanTextPerMinute = 60
)

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = exchange.DefaultMaxBodyBytes
	}
	if c.AdminRole == "" {
		c.AdminRole = DefaultAdminRole
	}
	if c.CrossTenantRole == "" {
		c.CrossTenantRole = DefaultCrossTenantRole
	}
	if c.ScanTextMaxBytes <= 0 {
		c.ScanTextMaxBytes = DefaultScanTextMaxBytes
	}
	c.ScanTextMaxBytes = min(c.ScanTextMaxBytes, c.MaxBodyBytes)
	if c.ScanTextPerMinute <= 0 {
		c.ScanTextPerMinute = DefaultScanTextPerMinute
	}
	return c
}

// errNil names a missing dependency.
func errNil(what string) error { return fmt.Errorf("api: nil %s", what) }

var errNoExchanger = errors.New("api: GuardService needs the ext_proc server")
