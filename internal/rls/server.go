package rls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// MaxDescriptors bounds the descriptors of one request: they are decided in
// one Redis script call, and Envoy sends one per rate_limit action (a few).
const MaxDescriptors = 128

// Limiter is what the door needs of Bulwark's limiter (*ratelimit.Limiter):
// an atomic check of several limits, and a read that charges nothing (for
// descriptors whose hits_addend is 0).
type Limiter interface {
	Check(ctx context.Context, decisionID string, limits []ratelimit.Limit) (ratelimit.Result, error)
	Peek(ctx context.Context, limits []ratelimit.Limit) ([]ratelimit.LimitState, error)
}

// Options configure the door.
type Options struct {
	// Path is the envoy/ratelimit YAML file or directory (required).
	Path string
	// ResponseHeaders adds the x-ratelimit-* headers, as envoy/ratelimit
	// does with LIMIT_RESPONSE_HEADERS_ENABLED.
	ResponseHeaders bool
	// LimitHeader, RemainingHeader and ResetHeader name them (defaults
	// x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset).
	LimitHeader, RemainingHeader, ResetHeader string
}

// Status is the loaded configuration's state, for /readyz.
type Status struct {
	// Ready: a configuration is loaded and serving.
	Ready   bool     `json:"ready"`
	Path    string   `json:"path"`
	Domains []string `json:"domains,omitempty"`
	Rules   int      `json:"rules"`
	// LastError is why the last reload failed ("" when it succeeded): the
	// configuration in force stays the last good one.
	LastError  string    `json:"last_error,omitempty"`
	LastReload time.Time `json:"last_reload"`
	Reloads    int64     `json:"reloads"`
}

// Server is Envoy's RateLimitService v3 over Bulwark's limiter, configured
// by envoy/ratelimit's YAML. It is safe for concurrent use; Reload swaps the
// configuration atomically and keeps the last good one on error.
type Server struct {
	rlsv3.UnimplementedRateLimitServiceServer

	opts    Options
	limiter Limiter
	logger  *slog.Logger
	m       *metrics

	cfg    atomic.Pointer[Config]
	mu     sync.Mutex // serialises Reload and guards status
	status Status

	pool sync.Pool // *scratch
}

// scratch is one request's reusable buffers.
type scratch struct {
	key    []byte
	limits []ratelimit.Limit
	peeks  []ratelimit.Limit
	slots  []slot
}

// slot says where a descriptor's answer comes from.
type slot struct {
	r     *rule
	key   string // counter key of a counted rule
	limit *rlsv3.RateLimitResponse_RateLimit
	src   int8 // srcNone, srcUnlimited, srcCheck, srcPeek, srcZero
	idx   int  // index into limits or peeks
}

const (
	srcNone int8 = iota
	srcUnlimited
	srcCheck
	srcPeek
	srcZero // requests_per_unit 0: always over the limit, nothing to count
)

// New loads the configuration at opts.Path and returns the door. A
// configuration that does not load is an error: Bulwark does not start
// without one (a later reload error keeps the one in force).
func New(opts Options, limiter Limiter, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if opts.Path == "" {
		return nil, errors.New("rls: no configuration path")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.LimitHeader == "" {
		opts.LimitHeader = "x-ratelimit-limit"
	}
	if opts.RemainingHeader == "" {
		opts.RemainingHeader = "x-ratelimit-remaining"
	}
	if opts.ResetHeader == "" {
		opts.ResetHeader = "x-ratelimit-reset"
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, limiter: limiter, logger: logger, m: m}
	s.pool.New = func() any { return &scratch{} }
	s.status.Path = opts.Path
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the configuration again. On error the configuration in force
// stays, and Status and the metrics say why.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := Load(s.opts.Path)
	s.status.LastReload = time.Now()
	if err != nil {
		s.status.LastError = err.Error()
		s.m.reloads.WithLabelValues("error").Inc()
		s.m.healthy.Set(0)
		if s.cfg.Load() != nil {
			s.logger.Error("rls config failed to load; the previous configuration stays in force", "path", s.opts.Path, "error", err)
		}
		return err
	}
	s.cfg.Store(cfg)
	s.status.Ready, s.status.LastError = true, ""
	s.status.Domains, s.status.Rules = cfg.Domains(), cfg.Rules
	s.status.Reloads++
	s.m.reloads.WithLabelValues("ok").Inc()
	s.m.healthy.Set(1)
	s.logger.Info("rls config loaded", "path", s.opts.Path, "domains", s.status.Domains, "rules", cfg.Rules)
	return nil
}

// Status reports the configuration in force and the last reload's outcome.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Domains = append([]string(nil), st.Domains...)
	return st
}

// ShouldRateLimit decides all descriptors of a request at once, with the
// limiter's GCRA counters: if an enforced descriptor is over its limit,
// nothing is charged for any of them.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	resp, err := s.decide(ctx, req)
	switch {
	case err != nil:
		s.m.errored.Inc()
	case resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT:
		s.m.over.Inc()
	default:
		s.m.ok.Inc()
	}
	return resp, err
}

func (s *Server) decide(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	domain := req.GetDomain()
	descs := req.GetDescriptors()
	switch {
	case domain == "":
		return nil, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	case len(descs) == 0:
		return nil, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	case len(descs) > MaxDescriptors:
		return nil, status.Errorf(codes.InvalidArgument, "%d descriptors: at most %d per request", len(descs), MaxDescriptors)
	}
	cfg := s.cfg.Load()
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	sc.limits, sc.peeks, sc.slots = sc.limits[:0], sc.peeks[:0], sc.slots[:0]

	tenant := "rls/" + domain
	// First pass: the rule each descriptor matches, and its counter key.
	var replacing []string
	for _, d := range descs {
		var sl slot
		sc.key = sc.key[:0]
		if o := d.GetLimit(); o != nil {
			var err error
			if sl.r, err = overrideRule(o); err != nil {
				return nil, err
			}
			for _, e := range d.GetEntries() {
				sc.key = appendPart(appendPart(sc.key, e.GetKey()), e.GetValue())
			}
		} else {
			sl.r, sc.key = cfg.lookup(domain, d.GetEntries(), sc.key)
		}
		if sl.r != nil {
			replacing = append(replacing, sl.r.replaces...)
			if !sl.r.unlimited && sl.r.perUnit > 0 {
				sl.key = string(sc.key)
			}
		}
		sc.slots = append(sc.slots, sl)
	}
	// Second pass: what to count. A named limit that another matched
	// descriptor replaces is not applied (envoy/ratelimit's rule, replacers
	// that are themselves unlimited included).
	zeroDeny := false
	for i, d := range descs {
		sl := &sc.slots[i]
		r := sl.r
		switch {
		case r == nil:
		case replaced(r, replacing):
			sl.r = nil
		case r.unlimited:
			sl.src = srcUnlimited
		case r.perUnit == 0:
			sl.src, sl.limit = srcZero, r.limit
			zeroDeny = zeroDeny || !r.shadow
		default:
			sl.limit = r.limit
			lim := ratelimit.Limit{Name: r.id, Tenant: tenant, Key: sl.key, Limit: int64(r.perUnit), Period: r.period, Shadow: r.shadow}
			hits := hitsAddend(req, d.GetHitsAddend())
			if hits == 0 || d.GetIsNegativeHits() {
				// A read: nothing charged (a refund is not counted either).
				sl.src, sl.idx = srcPeek, len(sc.peeks)
				sc.peeks = append(sc.peeks, lim)
			} else {
				lim.Cost = hits
				sl.src, sl.idx = srcCheck, len(sc.limits)
				sc.limits = append(sc.limits, lim)
			}
		}
	}

	var res ratelimit.Result
	res.Allowed = true
	if len(sc.limits) > 0 {
		if zeroDeny {
			// Denied whatever the counters say: charge nothing, report them.
			for i := range sc.slots {
				if sc.slots[i].src == srcCheck {
					sc.slots[i].src, sc.slots[i].idx = srcPeek, len(sc.peeks)
					sc.peeks = append(sc.peeks, sc.limits[sc.slots[i].idx])
				}
			}
		} else {
			var err error
			if res, err = s.limiter.Check(ctx, "", sc.limits); err != nil {
				return nil, limiterError(err)
			}
			if res.Degraded {
				s.m.degraded.Inc()
			}
		}
	}
	var peeked []ratelimit.LimitState
	if len(sc.peeks) > 0 {
		var err error
		if peeked, err = s.limiter.Peek(ctx, sc.peeks); err != nil {
			return nil, limiterError(err)
		}
	}

	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(sc.slots))}
	if !res.Allowed || zeroDeny {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	var closest *rlsv3.RateLimitResponse_DescriptorStatus
	for i, sl := range sc.slots {
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		switch sl.src {
		case srcUnlimited:
			st.LimitRemaining = math.MaxUint32
		case srcZero:
			st.CurrentLimit = sl.limit
			if !sl.r.shadow {
				st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			}
			st.DurationUntilReset = durationpb.New(sl.r.period)
		case srcCheck:
			fill(st, sl.limit, res.Limits[sl.idx])
		case srcPeek:
			fill(st, sl.limit, peeked[sl.idx])
		}
		resp.Statuses[i] = st
		if s.opts.ResponseHeaders && st.CurrentLimit != nil && (closest == nil || closer(st, closest)) {
			closest = st
		}
	}
	if closest != nil {
		reset := int64(0)
		if d := closest.DurationUntilReset.AsDuration(); d > 0 {
			reset = int64(math.Ceil(d.Seconds()))
		}
		resp.ResponseHeadersToAdd = []*corev3.HeaderValue{
			{Key: s.opts.LimitHeader, Value: strconv.FormatUint(uint64(closest.CurrentLimit.GetRequestsPerUnit()), 10)},
			{Key: s.opts.RemainingHeader, Value: strconv.FormatUint(uint64(closest.LimitRemaining), 10)},
			{Key: s.opts.ResetHeader, Value: strconv.FormatInt(reset, 10)},
		}
	}
	return resp, nil
}

// closer reports whether a is the status the headers should describe
// rather than b: an over-limit descriptor first, then the fewest remaining.
func closer(a, b *rlsv3.RateLimitResponse_DescriptorStatus) bool {
	ao, bo := a.Code == rlsv3.RateLimitResponse_OVER_LIMIT, b.Code == rlsv3.RateLimitResponse_OVER_LIMIT
	if ao != bo {
		return ao
	}
	return a.LimitRemaining < b.LimitRemaining
}

// fill sets a counted descriptor's status from its limit state. A shadow
// limit over its limit still answers OK. duration_until_reset is when the
// counter is full again, or, over the limit, when this request would fit.
func fill(st *rlsv3.RateLimitResponse_DescriptorStatus, limit *rlsv3.RateLimitResponse_RateLimit, ls ratelimit.LimitState) {
	st.CurrentLimit = limit
	st.LimitRemaining = uint32(min(max(ls.Remaining, 0), math.MaxUint32)) // #nosec G115 -- clamped to [0, MaxUint32]
	reset := ls.Reset
	if ls.Exceeded {
		reset = ls.RetryAfter
		if !ls.Shadow {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
		}
	}
	st.DurationUntilReset = durationpb.New(reset)
}

// replaced reports whether r is a named limit that names lists.
func replaced(r *rule, names []string) bool {
	if r.name == "" {
		return false
	}
	for _, n := range names {
		if n == r.name {
			return true
		}
	}
	return false
}

// hitsAddend is what a descriptor adds to its counter: its own hits_addend
// when set (0 included: a read), else the request's, at least 1.
func hitsAddend(req *rlsv3.RateLimitRequest, own *wrapperspb.UInt64Value) int64 {
	var h uint64
	if own != nil {
		h = own.GetValue()
	} else {
		h = max(uint64(req.GetHitsAddend()), 1)
	}
	return int64(min(h, math.MaxInt64)) // #nosec G115 -- clamped
}

// overrideRule is the rule of a descriptor that carries its own limit
// (Envoy's rate_limit action "limit" override), which envoy/ratelimit
// applies instead of the file's, never in shadow mode.
// The override's unit (envoy.type.v3.RateLimitUnit) numbers its values as
// the response's unit does.
func overrideRule(o *rlv3.RateLimitDescriptor_RateLimitOverride) (*rule, error) {
	unit := rlsv3.RateLimitResponse_RateLimit_Unit(o.GetUnit())
	period := unitPeriod(unit)
	if period == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "descriptor limit override has unknown unit %v", o.GetUnit())
	}
	id := "override:" + strconv.FormatUint(uint64(o.GetRequestsPerUnit()), 10) + "/" + unit.String()
	return &rule{id: id, unit: unit, perUnit: o.GetRequestsPerUnit(), period: period,
		limit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: o.GetRequestsPerUnit(), Unit: unit}}, nil
}

// limiterError maps a limiter error onto a gRPC status: Envoy then applies
// its failure_mode_deny (an unavailable store is Envoy's call, as with
// envoy/ratelimit; Bulwark's fail-open fallback answers before this).
func limiterError(err error) error {
	if errors.Is(err, ratelimit.ErrUnavailable) || errors.Is(err, ratelimit.ErrClosed) {
		return status.Error(codes.Unavailable, "rate limit store unavailable")
	}
	return status.Error(codes.Internal, fmt.Sprintf("rate limit check failed: %v", err))
}
