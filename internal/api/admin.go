package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// Admin implements bulwark.v1.AdminService.
type Admin struct {
	bulwarkv1.UnimplementedAdminServiceServer
	cfg      Config
	auth     Authenticator
	policies Policies
	quotas   Quotas
	keys     Keys
	usage    UsageQuerier
	auditor  Auditor
	logger   *slog.Logger
	now      func() time.Time
}

var _ bulwarkv1.AdminServiceServer = (*Admin)(nil)

// NewAdmin returns the AdminService. auditor may be nil (no audit log
// configured); quotas may be nil (quota calls are then UNIMPLEMENTED), and
// so may usage (GetUsage is then UNIMPLEMENTED).
func NewAdmin(cfg Config, auth Authenticator, policies Policies, quotas Quotas, keys Keys, usage UsageQuerier, auditor Auditor, logger *slog.Logger) (*Admin, error) {
	switch {
	case auth == nil:
		return nil, errNil("authenticator")
	case policies == nil:
		return nil, errNil("policy engine")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Admin{cfg: cfg.withDefaults(), auth: auth, policies: policies, quotas: quotas, keys: keys, usage: usage,
		auditor: auditor, logger: logger, now: time.Now}, nil
}

// scope is what one operator may touch: every tenant, or one tenant's
// keys and quotas ("" = only keys that have no tenant).
type scope struct {
	all    bool
	tenant string
}

// allows reports whether a resource of tenant t is within the scope.
func (s scope) allows(t string) bool { return s.all || t == s.tenant }

func (s scope) String() string {
	if s.all {
		return "all_tenants"
	}
	return "tenant:" + s.tenant
}

// call authorizes one admin call, runs it within the caller's scope, and
// audits it whatever happened. details are what the audit record says about
// the call's arguments and result (identifiers only).
func call[T any](ctx context.Context, a *Admin, method string, details map[string]any, fn func(scope) (T, error)) (T, error) {
	var zero T
	p, sc, authErr := a.authorize(ctx)
	var out T
	err := authErr
	if err == nil {
		if details == nil {
			details = map[string]any{}
		}
		details["scope"] = sc.String()
		out, err = fn(sc)
	}
	a.audit(ctx, method, p, authErr == nil, err, details)
	if err != nil {
		return zero, err
	}
	return out, nil
}

// authorize resolves the caller, requires the operator role and says how
// far the caller reaches.
func (a *Admin) authorize(ctx context.Context) (identity.Principal, scope, error) {
	p := a.auth.Authenticate(ctx, callerOf(ctx).credentials())
	if !p.Authenticated() {
		return p, scope{}, unauthenticated(p.Error)
	}
	if !slices.Contains(p.Roles, a.cfg.AdminRole) {
		return p, scope{}, denied("role_not_allowed", "principal %q does not have the %s role", p.ID, a.cfg.AdminRole)
	}
	return p, scope{all: slices.Contains(p.Roles, a.cfg.CrossTenantRole), tenant: p.Tenant}, nil
}

// denied is PERMISSION_DENIED with an ErrorInfo reason.
func denied(reason, format string, args ...any) error {
	st := status.New(codes.PermissionDenied, fmt.Sprintf(format, args...))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

func (a *Admin) audit(ctx context.Context, method string, p identity.Principal, authorized bool, err error, details map[string]any) {
	code := status.Code(err)
	d := map[string]any{"method": method, "code": grpcCodeName(code)}
	for k, v := range details {
		d[k] = v
	}
	if p.Error != "" {
		d["credential_error"] = p.Error
	}
	route := "/" + bulwarkv1.AdminService_ServiceDesc.ServiceName + "/" + method
	level := slog.LevelInfo
	if code != codes.OK {
		level = slog.LevelWarn
	}
	a.logger.Log(ctx, level, "admin call", "method", method, "principal", p.ID, "principal_kind", p.Kind, "code", code.String())
	if a.auditor == nil {
		return
	}
	r := audit.Record{Type: AuditTypeAdminCall, Route: route, Allowed: &authorized, Reason: grpcCodeName(code), Details: d}
	if p.Kind != "" {
		r.Principal = &audit.Principal{ID: p.ID, Kind: string(p.Kind), Tenant: p.Tenant}
	}
	a.auditor.Log(context.WithoutCancel(ctx), r)
}

// GetPolicyStatus reports the policy in force; any operator may read it.
func (a *Admin) GetPolicyStatus(ctx context.Context, _ *bulwarkv1.GetPolicyStatusRequest) (*bulwarkv1.GetPolicyStatusResponse, error) {
	return call(ctx, a, "GetPolicyStatus", nil, func(scope) (*bulwarkv1.GetPolicyStatusResponse, error) {
		return &bulwarkv1.GetPolicyStatusResponse{Status: policyStatus(a.policies.Status())}, nil
	})
}

// ReloadPolicies loads the policy source now. The policy governs every
// tenant, so only a cross-tenant operator may reload it.
func (a *Admin) ReloadPolicies(ctx context.Context, _ *bulwarkv1.ReloadPoliciesRequest) (*bulwarkv1.ReloadPoliciesResponse, error) {
	details := map[string]any{}
	return call(ctx, a, "ReloadPolicies", details, func(sc scope) (*bulwarkv1.ReloadPoliciesResponse, error) {
		if !sc.all {
			return nil, denied("cross_tenant_required", "reloading the policy affects every tenant: it needs the %s role", a.cfg.CrossTenantRole)
		}
		prev := a.policies.Status().Revision
		details["old_revision"] = prev
		if err := a.policies.Reload(ctx); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "policy failed to load; revision %q stays in force: %v", prev, err)
		}
		st := a.policies.Status()
		details["new_revision"] = st.Revision
		return &bulwarkv1.ReloadPoliciesResponse{Status: policyStatus(st), Changed: st.Revision != prev, PreviousRevision: prev}, nil
	})
}

func policyStatus(s policy.Status) *bulwarkv1.PolicyStatus {
	out := &bulwarkv1.PolicyStatus{Ready: s.Ready, Revision: s.Revision, Source: s.Source, LastError: s.LastError}
	if !s.LoadedAt.IsZero() {
		out.LoadedAt = timestamppb.New(s.LoadedAt)
	}
	if !s.LastErrorAt.IsZero() {
		out.LastErrorAt = timestamppb.New(s.LastErrorAt)
	}
	return out
}

// GetQuota reports a subject's counters, within the caller's scope.
func (a *Admin) GetQuota(ctx context.Context, req *bulwarkv1.GetQuotaRequest) (*bulwarkv1.GetQuotaResponse, error) {
	details := map[string]any{}
	return call(ctx, a, "GetQuota", details, func(sc scope) (*bulwarkv1.GetQuotaResponse, error) {
		limits, err := a.selectLimits(sc, req.GetSubject(), req.GetLimitName(), details)
		if err != nil {
			return nil, err
		}
		counters, err := a.peek(ctx, limits)
		if err != nil {
			return nil, err
		}
		return &bulwarkv1.GetQuotaResponse{Counters: counters}, nil
	})
}

// ResetQuota refills a subject's counters, within the caller's scope.
func (a *Admin) ResetQuota(ctx context.Context, req *bulwarkv1.ResetQuotaRequest) (*bulwarkv1.ResetQuotaResponse, error) {
	details := map[string]any{}
	return call(ctx, a, "ResetQuota", details, func(sc scope) (*bulwarkv1.ResetQuotaResponse, error) {
		limits, err := a.selectLimits(sc, req.GetSubject(), req.GetLimitName(), details)
		if err != nil {
			return nil, err
		}
		if len(limits) == 0 {
			return nil, status.Error(codes.NotFound, "no counter of this subject has been checked on this replica")
		}
		if err := a.quotas.Reset(ctx, limits); err != nil {
			return nil, quotaError(err)
		}
		details["reset"] = len(limits)
		counters, err := a.peek(ctx, limits)
		if err != nil {
			return nil, err
		}
		return &bulwarkv1.ResetQuotaResponse{Counters: counters}, nil
	})
}

// selectLimits validates a subject and returns its known limits that lie
// within sc. A tenant-scoped operator reaches only its tenant's counters
// (a principal's, only as counted inside that tenant); an operator with
// neither a tenant nor the cross-tenant role reaches none.
func (a *Admin) selectLimits(sc scope, s *bulwarkv1.QuotaSubject, name string, details map[string]any) ([]ratelimit.Limit, error) {
	if a.quotas == nil {
		return nil, status.Error(codes.Unimplemented, "no rate limiter configured")
	}
	if !sc.all && sc.tenant == "" {
		return nil, denied("tenant_required", "quotas belong to tenants: an operator needs a tenant or the %s role", a.cfg.CrossTenantRole)
	}
	var match func(l ratelimit.Limit) bool
	switch k := s.GetKind().(type) {
	case *bulwarkv1.QuotaSubject_Principal:
		id := k.Principal
		if err := validSubject("subject.principal", id); err != nil {
			return nil, err
		}
		details["principal"] = id
		match = func(l ratelimit.Limit) bool { return l.Principal == id && (sc.all || l.Tenant == sc.tenant) }
	case *bulwarkv1.QuotaSubject_Tenant:
		t := k.Tenant
		if err := validSubject("subject.tenant", t); err != nil {
			return nil, err
		}
		details["tenant"] = t
		if !sc.allows(t) {
			return nil, denied("tenant_not_allowed", "an operator of tenant %q may not manage tenant %q", sc.tenant, t)
		}
		match = func(l ratelimit.Limit) bool { return l.Tenant == t }
	default:
		return nil, invalid("subject", "set principal or tenant")
	}
	if name != "" {
		details["limit_name"] = name
	}
	return a.quotas.Known(func(l ratelimit.Limit) bool { return (name == "" || l.Name == name) && match(l) }), nil
}

func validSubject(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "is empty")
	case len(v) > maxSubjectBytes:
		return invalid(field, "is %d bytes; at most %d", len(v), maxSubjectBytes)
	case strings.ContainsAny(v, "{}"):
		return invalid(field, "must not contain braces")
	}
	return nil
}

func (a *Admin) peek(ctx context.Context, limits []ratelimit.Limit) ([]*bulwarkv1.QuotaCounter, error) {
	states, err := a.quotas.Peek(ctx, limits)
	if err != nil {
		return nil, quotaError(err)
	}
	out := make([]*bulwarkv1.QuotaCounter, len(states))
	for i, s := range states {
		out[i] = &bulwarkv1.QuotaCounter{Name: s.Name, Key: s.SubjectKey(), Limit: s.Limit, Period: durationpb.New(s.Period),
			Remaining: s.Remaining, ResetAfter: durationpb.New(s.Reset), Shadow: s.Shadow}
	}
	return out, nil
}

func quotaError(err error) error {
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return status.Error(codes.Unavailable, "the rate limit store did not answer")
	}
	return status.Errorf(codes.Internal, "quota: %v", err)
}

// ListKeys lists the key records within the caller's scope, never secrets
// or hashes.
func (a *Admin) ListKeys(ctx context.Context, _ *bulwarkv1.ListKeysRequest) (*bulwarkv1.ListKeysResponse, error) {
	details := map[string]any{}
	return call(ctx, a, "ListKeys", details, func(sc scope) (*bulwarkv1.ListKeysResponse, error) {
		now := a.now()
		var out []*bulwarkv1.KeyInfo
		add := func(recs []identity.KeyRecord, src bulwarkv1.KeySource) {
			for _, r := range recs {
				if sc.allows(r.Tenant) {
					out = append(out, keyInfo(r, src, now))
				}
			}
		}
		if a.keys.File != "" {
			kf, err := identity.ReadKeysFile(a.keys.File)
			if err != nil {
				return nil, status.Errorf(codes.Internal, "keys file: %v", err)
			}
			add(kf.Keys, bulwarkv1.KeySource_KEY_SOURCE_FILE)
		}
		if a.keys.Redis != nil {
			recs, err := a.keys.Redis.List(ctx)
			if err != nil {
				return nil, status.Error(codes.Unavailable, "the Redis key store did not answer")
			}
			add(recs, bulwarkv1.KeySource_KEY_SOURCE_REDIS)
		}
		slices.SortStableFunc(out, func(x, y *bulwarkv1.KeyInfo) int {
			if c := strings.Compare(x.GetId(), y.GetId()); c != 0 {
				return c
			}
			return int(x.GetSource() - y.GetSource())
		})
		details["keys"] = len(out)
		return &bulwarkv1.ListKeysResponse{Keys: out}, nil
	})
}

// RevokeKey revokes a key in every store that holds it, if the key is
// within the caller's scope; a key outside it is NOT_FOUND, as a missing
// one, so a tenant's operator cannot learn other tenants' key ids. Each
// store is changed atomically against every other writer (file lock,
// Redis compare-and-swap), so an acknowledged revocation stays.
func (a *Admin) RevokeKey(ctx context.Context, req *bulwarkv1.RevokeKeyRequest) (*bulwarkv1.RevokeKeyResponse, error) {
	id := req.GetId()
	details := map[string]any{"key_id": id}
	return call(ctx, a, "RevokeKey", details, func(sc scope) (*bulwarkv1.RevokeKeyResponse, error) {
		if !validKeyID(id) {
			return nil, invalid("id", "%q is not a key id (1-64 letters, digits or '-')", id)
		}
		now := a.now().UTC().Truncate(time.Second)
		inScope := func(r identity.KeyRecord) bool { return sc.allows(r.Tenant) }
		var out []*bulwarkv1.KeyInfo
		if a.keys.File != "" {
			r, err := a.revokeInFile(ctx, id, now, inScope)
			if err != nil {
				return nil, err
			}
			if r != nil {
				out = append(out, keyInfo(*r, bulwarkv1.KeySource_KEY_SOURCE_FILE, now))
			}
		}
		if a.keys.Redis != nil {
			r, err := a.keys.Redis.Revoke(ctx, id, now, inScope)
			switch {
			case errors.Is(err, identity.ErrKeyNotFound):
			case r == nil || r.RevokedAt.IsZero():
				a.logger.Warn("API key not revoked in Redis", "key_id", id, "error", err)
				return nil, status.Error(codes.Unavailable, "the Redis key store did not answer")
			default:
				if err != nil {
					// Stored but not announced: it still holds, and other
					// replicas see it within their cache TTL.
					a.logger.Warn("API key revoked in Redis; change not announced", "key_id", id, "error", err)
				}
				out = append(out, keyInfo(*r, bulwarkv1.KeySource_KEY_SOURCE_REDIS, now))
			}
		}
		if len(out) == 0 {
			return nil, status.Errorf(codes.NotFound, "no key %q", id)
		}
		return &bulwarkv1.RevokeKeyResponse{Keys: out}, nil
	})
}

// revokeInFile marks id revoked in the keys file (under the file's lock,
// atomically rewritten) and reloads it; nil when the file has no such key
// within scope.
func (a *Admin) revokeInFile(ctx context.Context, id string, now time.Time, inScope func(identity.KeyRecord) bool) (*identity.KeyRecord, error) {
	rec, changed, err := identity.RevokeInKeysFile(ctx, a.keys.File, id, now, inScope)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err() // gave up waiting for another writer's lock
	case err != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "keys file cannot be changed (read-only mount? malformed?): %v", err)
	}
	if changed && a.keys.Reload != nil {
		if err := a.keys.Reload(); err != nil {
			return nil, status.Errorf(codes.Internal, "keys file written but not reloaded: %v", err)
		}
	}
	return rec, nil
}

func keyInfo(r identity.KeyRecord, src bulwarkv1.KeySource, now time.Time) *bulwarkv1.KeyInfo {
	k := &bulwarkv1.KeyInfo{Id: r.ID, Principal: r.Principal, Roles: r.Roles, Tenant: r.Tenant, Source: src}
	if k.Principal == "" {
		k.Principal = r.ID
	}
	switch r.Status(now) {
	case "active":
		k.Status = bulwarkv1.KeyStatus_KEY_STATUS_ACTIVE
	case identity.ReasonDisabled:
		k.Status = bulwarkv1.KeyStatus_KEY_STATUS_DISABLED
	case identity.ReasonRevoked:
		k.Status = bulwarkv1.KeyStatus_KEY_STATUS_REVOKED
	case identity.ReasonExpired:
		k.Status = bulwarkv1.KeyStatus_KEY_STATUS_EXPIRED
	}
	k.CreatedAt, k.ExpiresAt, k.RevokedAt = timestamp(r.CreatedAt), timestamp(r.ExpiresAt), timestamp(r.RevokedAt)
	return k
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// validKeyID is identity's key id rule: 1-64 letters, digits or '-'.
func validKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
