package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Limiter decides policy limits against Redis, shared by every replica, or
// in-process when no Redis is configured. It is safe for concurrent use.
type Limiter struct {
	cfg    Config
	client redis.UniversalClient // nil: in-process only
	// ownsClient: the limiter dialled client itself and closes it.
	ownsClient bool
	cluster    bool
	local      *local
	m          *metrics
	br         *breaker

	queue chan *item
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once

	probeMu sync.Mutex
	probing bool

	idxMu  sync.Mutex
	idx    map[string]*redisReservation
	idxOps int

	known knownLimits // counter definitions, for Known, Peek and Reset (quota.go)

	pool sync.Pool
}

// redisReservation locates a reservation held in Redis. Only the replica that
// reserved knows the hash tag, so Reconcile runs where Check ran (ext_proc's
// request and response phases share one stream, hence one replica).
type redisReservation struct {
	keys    []string // reservation key, then its counter keys
	expires time.Time
	done    bool
}

// New builds a Limiter. With cfg.RedisURL empty it never blocks and never
// fails a Check on the store; otherwise it connects lazily (a Redis that is
// down at start only opens the breaker). reg may be nil.
func New(cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: register metrics: %w", err)
	}
	l := &Limiter{
		cfg:  cfg,
		m:    m,
		stop: make(chan struct{}),
		idx:  map[string]*redisReservation{},
	}
	l.pool.New = func() any { return &item{done: make(chan struct{}, 1)} }
	if cfg.RedisURL == "" {
		l.local = newLocal(cfg.Clock, 1)
		return l, nil
	}
	l.local = newLocal(cfg.Clock, cfg.LocalShare)
	if cfg.Client != nil {
		l.client = cfg.Client
		_, l.cluster = cfg.Client.(*redis.ClusterClient)
	} else {
		opts, err := redisOptions(cfg)
		if err != nil {
			return nil, err
		}
		l.client = redis.NewUniversalClient(opts)
		l.cluster = isCluster(opts)
		l.ownsClient = true
	}
	l.br = &breaker{threshold: int64(cfg.BreakerThreshold), onChange: l.breakerChanged}
	l.queue = make(chan *item, cfg.BatchMax*cfg.BatchWorkers*4)
	for range cfg.BatchWorkers {
		l.wg.Add(1)
		go l.worker()
	}
	return l, nil
}

// Close stops the batcher and closes the Redis client it dialled (not a
// Config.Client). Checks after Close return ErrClosed.
func (l *Limiter) Close() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
		if l.ownsClient {
			err = l.client.Close()
		}
	})
	return err
}

// Healthy reports whether the limiter decides with its configured store:
// always for the in-process limiter, and for Redis while the breaker is
// closed. /readyz uses it; a fail-open limiter still answers when unhealthy.
func (l *Limiter) Healthy() bool {
	return l.client == nil || !l.br.open()
}

// State returns the Redis circuit breaker's state (BreakerClosed without
// Redis).
func (l *Limiter) State() BreakerState {
	if l.client == nil {
		return BreakerClosed
	}
	return BreakerState(l.br.state.Load())
}

// Check decides all limits of one request at once: if an enforced limit would
// be exceeded, nothing is charged and Result.Allowed is false. decisionID
// names the token reservation that Reconcile later settles (needed only when
// a limit is Estimated). An error is either ErrInvalidLimit (a policy bug) or
// ErrUnavailable (Redis failed and a limit fails closed).
func (l *Limiter) Check(ctx context.Context, decisionID string, limits []Limit) (Result, error) {
	if len(limits) == 0 {
		return Result{Allowed: true}, nil
	}
	select {
	case <-l.stop:
		return Result{}, ErrClosed
	default:
	}
	var kb [4]string
	keys := kb[:0]
	tag := ""
	estimated := false
	for i, lim := range limits {
		if err := lim.validate(); err != nil {
			return Result{}, err
		}
		k := counterKey(l.cfg.KeyPrefix, lim)
		l.known.note(k, lim)
		t := hashTag(k)
		if i == 0 {
			tag = t
		} else if t != tag {
			return Result{}, invalidf("limits %q and %q use hash tags {%s} and {%s}: all limits of one request must start with the same tenant (or principal, or key)",
				limits[0].Name, lim.Name, tag, t)
		}
		keys = append(keys, k)
		estimated = estimated || lim.Estimated
	}
	if estimated && decisionID == "" {
		estimated = false // nothing to reconcile against
	}
	if l.client == nil {
		var res Result
		charges := l.local.check(limits, keys, &res)
		if estimated && len(charges) > 0 {
			l.local.reserve(decisionID, charges, l.cfg.ReservationTTL)
		}
		l.m.observe(&res)
		return res, nil
	}
	if l.br.open() {
		return l.fallback(decisionID, limits, keys, estimated, errBreakerOpen)
	}

	it := l.pool.Get().(*item)
	// Copied: an abandoned item may still be read by a worker after Check
	// returns, and the caller owns limits again by then.
	it.ctx, it.limits, it.keys, it.rsvKey, it.err = ctx, append(it.limits[:0], limits...), keys, "", nil
	it.slot = 0
	if l.cluster {
		it.slot = slotOf(tag)
	}
	if estimated {
		it.rsvKey = reservationKey(l.cfg.KeyPrefix, tag, decisionID)
	}
	it.enqueued = time.Now()
	select {
	case l.queue <- it:
	case <-ctx.Done():
		return l.fallback(decisionID, limits, keys, estimated, ctx.Err())
	case <-l.stop:
		return Result{}, ErrClosed
	}
	// The wait is bounded by CheckTimeout even if the batch is stuck (e.g. in
	// a connection handshake that ignores its deadline).
	if it.timer == nil {
		it.timer = time.NewTimer(l.cfg.CheckTimeout)
	} else {
		it.timer.Reset(l.cfg.CheckTimeout)
	}
	select {
	case <-it.done:
		it.timer.Stop()
	case <-ctx.Done():
		// The batch may still charge this request: over-counting a request
		// that gave up is the safe direction. The item is abandoned, not pooled.
		return l.fallback(decisionID, limits, keys, estimated, ctx.Err())
	case <-it.timer.C:
		l.br.failure() // a stuck call is a failure even before it errors
		return l.fallback(decisionID, limits, keys, estimated, errCheckTimeout)
	}
	res, err := it.res, it.err
	it.ctx, it.limits, it.keys, it.res = nil, it.limits[:0], nil, Result{}
	l.pool.Put(it)
	if err != nil {
		return l.fallback(decisionID, limits, keys, estimated, err)
	}
	if estimated && res.Allowed {
		l.remember(decisionID, tag, keys, limits)
	}
	l.m.observe(&res)
	return res, nil
}

var errBreakerOpen = errors.New("circuit breaker open")

// fallback answers when Redis could not: an error if an enforced limit fails
// closed, otherwise the in-process limiter with LocalShare of each limit.
func (l *Limiter) fallback(decisionID string, limits []Limit, keys []string, estimated bool, cause error) (Result, error) {
	for _, lim := range limits {
		mode := lim.FailureMode
		if mode == "" {
			mode = l.cfg.FailureMode
		}
		if mode == FailClosed && !lim.Shadow {
			l.m.errored.Inc()
			return Result{}, &Error{Code: CodeUnavailable, Reason: fmt.Sprintf("limit %q fails closed and Redis is unavailable", lim.Name), Err: cause}
		}
	}
	res := Result{Degraded: true}
	charges := l.local.check(limits, keys, &res)
	res.Degraded = true
	if estimated && len(charges) > 0 {
		l.local.reserve(decisionID, charges, l.cfg.ReservationTTL)
	}
	l.m.observe(&res)
	return res, nil
}

func (l *Limiter) remember(decisionID, tag string, keys []string, limits []Limit) {
	rk := []string{reservationKey(l.cfg.KeyPrefix, tag, decisionID)}
	for i, lim := range limits {
		if lim.Estimated && !slices.Contains(rk, keys[i]) {
			rk = append(rk, keys[i])
		}
	}
	now := time.Now()
	l.idxMu.Lock()
	defer l.idxMu.Unlock()
	l.idx[decisionID] = &redisReservation{keys: rk, expires: now.Add(l.cfg.ReservationTTL)}
	l.idxOps++
	if l.idxOps%1024 == 0 {
		for id, r := range l.idx {
			if now.After(r.expires) {
				delete(l.idx, id)
			}
		}
	}
}

// Reconcile settles the token reservation made by Check for decisionID with
// the actual usage: the difference actual-estimate is refunded (negative) or
// charged (positive, even past the limit: the tokens were spent) on every
// Estimated limit that was charged. It is idempotent: a second call for the
// same decision id does nothing and returns nil. It returns
// ErrUnknownReservation for an id this replica never reserved or that
// expired, and ErrUnavailable when Redis fails (the caller may retry).
func (l *Limiter) Reconcile(ctx context.Context, decisionID string, actual int64) error {
	if actual < 0 {
		return invalidf("reconcile %q: actual usage %d must be >= 0", decisionID, actual)
	}
	l.idxMu.Lock()
	r, ok := l.idx[decisionID]
	if ok && time.Now().After(r.expires) {
		delete(l.idx, decisionID)
		ok = false
	}
	done := ok && r.done
	l.idxMu.Unlock()
	if !ok {
		if l.local.reconcile(decisionID, actual) {
			return nil
		}
		return &Error{Code: CodeUnknownReservation, Reason: fmt.Sprintf("no reservation for decision %q", decisionID)}
	}
	if done {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CheckTimeout)
	defer cancel()
	start := time.Now()
	n, err := reconcileScript.Run(ctx, l.client, r.keys, actual).Int64()
	l.m.latencyReconcile.Observe(time.Since(start).Seconds())
	if err != nil {
		l.m.redisErrors.WithLabelValues("reconcile").Inc()
		return &Error{Code: CodeUnavailable, Reason: "reconcile failed", Err: err}
	}
	if n < 0 {
		return &Error{Code: CodeUnknownReservation, Reason: fmt.Sprintf("reservation for decision %q expired", decisionID)}
	}
	l.idxMu.Lock()
	r.done = true
	l.idxMu.Unlock()
	return nil
}

func (l *Limiter) breakerChanged(s BreakerState) {
	if l.cfg.OnBreakerChange != nil {
		l.cfg.OnBreakerChange(s)
	}
	if s == BreakerClosed {
		l.m.fallbackActive.Set(0)
		return
	}
	l.m.fallbackActive.Set(1)
	l.probeMu.Lock()
	defer l.probeMu.Unlock()
	if l.probing {
		return
	}
	l.probing = true
	l.wg.Add(1)
	go l.probe()
}

// probe pings Redis while the breaker is open and closes it on the first
// answer, so recovery takes about one ProbeInterval and no request pays for
// the attempts.
func (l *Limiter) probe() {
	defer l.wg.Done()
	t := time.NewTicker(l.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CheckTimeout)
		err := l.ping(ctx)
		cancel()
		if err != nil {
			l.m.redisErrors.WithLabelValues("probe").Inc()
			continue
		}
		l.probeMu.Lock()
		l.probing = false
		l.probeMu.Unlock()
		l.br.success()
		return
	}
}

func (l *Limiter) ping(ctx context.Context) error {
	if cc, ok := l.client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	}
	return l.client.Ping(ctx).Err()
}

// worker is one batcher: it takes the first waiting check, gathers whatever
// else is queued (lingering up to BatchWindow) up to BatchMax, and decides
// them in one script call per hash slot, pipelined into one round trip.
func (l *Limiter) worker() {
	defer l.wg.Done()
	batch := make([]*item, 0, l.cfg.BatchMax)
	var buf []any
	var timer *time.Timer
	for {
		batch = batch[:0]
		select {
		case it := <-l.queue:
			batch = append(batch, it)
		case <-l.stop:
			l.drain()
			return
		}
		if l.cfg.BatchWindow > 0 {
			if timer == nil {
				timer = time.NewTimer(l.cfg.BatchWindow)
			} else {
				timer.Reset(l.cfg.BatchWindow)
			}
		linger:
			for len(batch) < l.cfg.BatchMax {
				select {
				case it := <-l.queue:
					batch = append(batch, it)
				case <-timer.C:
					break linger
				}
			}
			timer.Stop()
		}
		l.gather(&batch, l.cfg.BatchWindow == 0)
		l.runBatch(batch, &buf)
		clear(buf) // drop references to this batch's keys
		buf = buf[:0]
	}
}

// gather adds whatever is queued to batch, up to BatchMax. With yield, it
// first lets runnable goroutines run, and again after every round that found
// more: callers woken by the previous batch are usually runnable right now
// and about to queue their next check, so this batch takes them along
// instead of leaving them a round trip (fewer, larger script calls cost both
// Go and Redis less CPU per check). A yield with nothing runnable returns at
// once, so an idle limiter adds no latency.
func (l *Limiter) gather(batch *[]*item, yield bool) {
	for range 4 {
		if len(*batch) >= l.cfg.BatchMax {
			return
		}
		if yield {
			runtime.Gosched()
		}
		n := len(*batch)
	drain:
		for len(*batch) < l.cfg.BatchMax {
			select {
			case it := <-l.queue:
				*batch = append(*batch, it)
			default:
				break drain
			}
		}
		if !yield || len(*batch) == n {
			return
		}
	}
}

func (l *Limiter) drain() {
	for {
		select {
		case it := <-l.queue:
			it.err = ErrClosed
			it.done <- struct{}{}
		default:
			return
		}
	}
}

func finish(it *item, err error) {
	it.err = err
	it.done <- struct{}{}
}

var errCheckTimeout = errors.New("no answer from Redis within CheckTimeout")

var errQueued = errors.New("waited in the batch queue longer than CheckTimeout")

// runBatch decides a batch; buf is the calling worker's argument buffer.
func (l *Limiter) runBatch(batch []*item, buf *[]any) {
	now := time.Now()
	live := batch[:0]
	for _, it := range batch {
		switch {
		case it.ctx.Err() != nil:
			finish(it, it.ctx.Err())
		case now.Sub(it.enqueued) > l.cfg.CheckTimeout:
			finish(it, errQueued)
		case l.br.open():
			finish(it, errBreakerOpen)
		default:
			live = append(live, it)
		}
	}
	if len(live) == 0 {
		return
	}
	l.m.batchSize.Observe(float64(len(live)))
	// One script call per slot on Cluster; one for everything otherwise.
	if l.cluster {
		slices.SortStableFunc(live, func(a, b *item) int { return a.slot - b.slot })
	}
	var calls []scriptCall
	var owners [][]*item
	rsvTTL := l.cfg.ReservationTTL.Milliseconds()
	for i := 0; i < len(live); {
		j := i + 1
		if l.cluster {
			for j < len(live) && live[j].slot == live[i].slot {
				j++
			}
		} else {
			j = len(live)
		}
		group := live[i:j]
		// The whole command goes into the worker's reused buffer: a call
		// keeps its own sub-slice (go-redis is done with it when runScripts
		// returns), and growing the buffer leaves earlier calls' views intact.
		nk := 0
		for _, it := range group {
			nk += len(it.keys)
			if it.rsvKey != "" {
				nk++
			}
		}
		from := len(*buf)
		*buf = append(*buf, "evalsha", checkSHA, nk)
		for _, it := range group {
			*buf = it.appendKeys(*buf)
		}
		*buf = append(*buf, rsvTTL)
		for _, it := range group {
			*buf = it.appendArgv(*buf)
		}
		args := (*buf)[from:len(*buf):len(*buf)]
		calls = append(calls, scriptCall{args: args})
		owners = append(owners, group)
		i = j
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CheckTimeout)
	start := time.Now()
	runScripts(ctx, l.client, calls)
	cancel()
	l.m.latencyCheck.Observe(time.Since(start).Seconds())
	failed := false
	for c, call := range calls {
		vals, err := call.cmd.Result()
		if err != nil {
			failed = true
			l.m.redisErrors.WithLabelValues("check").Inc()
			for _, it := range owners[c] {
				finish(it, err)
			}
			continue
		}
		off := 0
		for _, it := range owners[c] {
			n, err := it.parse(vals[off:])
			off += n
			finish(it, err)
		}
	}
	if failed {
		l.br.failure()
	} else {
		l.br.success()
	}
}
