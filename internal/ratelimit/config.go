package ratelimit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailureMode says what a limit does when Redis cannot answer in time.
type FailureMode string

const (
	// FailOpen serves the request from the in-process limiter with
	// Config.LocalShare of the limit, so an outage degrades precision, not
	// availability. It is the default for limits.
	FailOpen FailureMode = "fail_open"
	// FailClosed makes Check return an error matching ErrUnavailable, which
	// the pipeline answers with 503 and the error's reason.
	FailClosed FailureMode = "fail_closed"
)

func (m FailureMode) valid() bool { return m == "" || m == FailOpen || m == FailClosed }

// Clock is the limiter's source of time for the in-process GCRA. Redis-backed
// checks never use it: they take time from Redis's TIME so that replica clocks
// never enter the arithmetic.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Limiter. The zero value is valid: an in-process limiter,
// exact for one replica, that needs nothing else to run.
type Config struct {
	// RedisURL selects the shared store. Empty: in-process limiter only.
	//   redis://[user:pass@]host:port[/db]         one node
	//   rediss://...                               TLS (CA from TLSCAFile or ?ca_file=)
	//   redis://h1:p1,h2:p2,h3:p3  or  h1:p1,h2:p2 Redis Cluster (seed nodes)
	//   redis://h:p?cluster=true                   Cluster from a single seed
	//   redis+sentinel://[user:pass@]s1:p1,s2:p2/master[/db]   Sentinel
	//   (or redis://s1:p1?master_name=master)
	RedisURL string
	// TLSCAFile is a PEM bundle trusted for rediss:// (default: system roots).
	TLSCAFile string
	// Client, when set, is the Redis client to use instead of dialling
	// RedisURL: a process shares one client per URL among everything that
	// reads that Redis (the API key store, revocations, the limiter). The
	// caller owns it: Close leaves it open. It should come from
	// NewRedisClient (no retries, ContextTimeoutEnabled); every limiter call
	// carries a deadline of at most CheckTimeout, so the client's own socket
	// timeouts only need to be no shorter. RedisURL and TLSCAFile are then
	// ignored, except that RedisURL must not be empty.
	Client redis.UniversalClient
	// KeyPrefix starts every Redis key (default "bulwark:rl"). It must not
	// contain '{' or '}', which would change the Cluster hash tag.
	KeyPrefix string
	// PoolSize is the connection pool size per node (default 32).
	PoolSize int
	// DialTimeout bounds connecting to Redis (default 1s).
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one socket read/write (default 100ms);
	// the request's context deadline applies as well (ContextTimeoutEnabled).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// CheckTimeout bounds one Check's wait for Redis even when the caller's
	// context allows longer (default 100ms); past it the failure mode applies.
	CheckTimeout time.Duration

	// FailureMode applies to limits whose own FailureMode is empty
	// (default FailOpen).
	FailureMode FailureMode
	// LocalShare is the fraction of each limit the in-process fallback grants
	// while Redis is unavailable, typically 1/replicas (default 1). Each local
	// limit is at least 1.
	LocalShare float64

	// BreakerThreshold is the number of consecutive failed Redis calls (or
	// checks left without an answer for CheckTimeout) that opens the circuit
	// breaker (default 5). While open, Check goes straight to
	// the failure mode without waiting on Redis.
	BreakerThreshold int
	// ProbeInterval is how often an open breaker pings Redis to detect
	// recovery (default 250ms).
	ProbeInterval time.Duration

	// BatchMax caps the checks sent in one script call (default 128).
	BatchMax int
	// BatchWindow is how long a batch may linger for more checks after the
	// first (default 0: take only what is already queued, which batches
	// naturally under load and adds no latency when idle).
	BatchWindow time.Duration
	// BatchWorkers is the number of script calls in flight at once (default
	// 1: while one call is in flight the next batch fills up, and fewer,
	// larger batches cost Redis and Go less CPU per check than many small
	// ones; on a 2-core machine 1 worker gave ~15 checks per call and more
	// checks/s than 2 workers' ~8). One call still reaches every Cluster node
	// at once (pipelined).
	BatchWorkers int

	// ReservationTTL is how long a token reservation waits for Reconcile
	// (default 15m). After it, the estimate simply stands.
	ReservationTTL time.Duration

	// Clock drives the in-process limiter (default: the system clock).
	Clock Clock

	// OnBreakerChange, when set, is told every time the Redis circuit
	// breaker opens (BreakerOpen: the fallback decides) or closes, so the
	// change can be audited and alerted on. It runs on the goroutine that
	// caused the change (a Check or the probe) under the breaker's lock: it
	// must return quickly and must not block. Default: none.
	OnBreakerChange func(BreakerState)
}

// withDefaults returns cfg with every zero field set to its default.
func (cfg Config) withDefaults() Config {
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "bulwark:rl"
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 32
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.ReadTimeout == 0 {
		// The request's own deadline (ContextTimeoutEnabled) is the real
		// bound; a shorter socket timeout would only declare a slow but
		// healthy Redis failed.
		cfg.ReadTimeout = max(cfg.CheckTimeout, 100*time.Millisecond)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = max(cfg.CheckTimeout, 100*time.Millisecond) // as ReadTimeout
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 100 * time.Millisecond
	}
	if cfg.FailureMode == "" {
		cfg.FailureMode = FailOpen
	}
	if cfg.LocalShare == 0 {
		cfg.LocalShare = 1
	}
	if cfg.BreakerThreshold == 0 {
		cfg.BreakerThreshold = 5
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 250 * time.Millisecond
	}
	if cfg.BatchMax == 0 {
		cfg.BatchMax = 128
	}
	if cfg.BatchWorkers == 0 {
		cfg.BatchWorkers = 1
	}
	if cfg.ReservationTTL == 0 {
		cfg.ReservationTTL = 15 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	return cfg
}

// Validate reports the first invalid field by name.
func (cfg Config) Validate() error {
	switch {
	case strings.ContainsAny(cfg.KeyPrefix, "{}"):
		return errors.New("ratelimit: KeyPrefix must not contain '{' or '}'")
	case cfg.PoolSize < 0:
		return errors.New("ratelimit: PoolSize must be >= 0")
	case cfg.DialTimeout < 0 || cfg.ReadTimeout < 0 || cfg.WriteTimeout < 0 || cfg.CheckTimeout < 0:
		return errors.New("ratelimit: DialTimeout, ReadTimeout, WriteTimeout and CheckTimeout must be >= 0")
	case !cfg.FailureMode.valid():
		return fmt.Errorf("ratelimit: FailureMode %q: want %q or %q", cfg.FailureMode, FailOpen, FailClosed)
	case cfg.LocalShare < 0 || cfg.LocalShare > 1:
		return fmt.Errorf("ratelimit: LocalShare %v: want 0 < share <= 1", cfg.LocalShare)
	case cfg.BreakerThreshold < 0:
		return errors.New("ratelimit: BreakerThreshold must be >= 0")
	case cfg.ProbeInterval < 0:
		return errors.New("ratelimit: ProbeInterval must be >= 0")
	case cfg.BatchMax < 0 || cfg.BatchWorkers < 0 || cfg.BatchWindow < 0:
		return errors.New("ratelimit: BatchMax, BatchWorkers and BatchWindow must be >= 0")
	case cfg.ReservationTTL < 0:
		return errors.New("ratelimit: ReservationTTL must be >= 0")
	}
	if cfg.Client != nil && cfg.RedisURL == "" {
		return errors.New("ratelimit: Client needs the RedisURL it was made from")
	}
	if cfg.RedisURL != "" && cfg.Client == nil {
		if _, err := redisOptions(cfg.withDefaults()); err != nil {
			return err
		}
	}
	return nil
}

// NewRedisClient connects to a --redis-url the way the limiter does (same URL
// forms: redis://, rediss:// with caFile, Sentinel, Cluster; same explicit
// timeouts and no retries), so every part of Bulwark that shares that Redis
// (the API key store, `bulwark keys`) reads the URL one way. timeout bounds
// one command; 0 means the limiter's default.
func NewRedisClient(url, caFile string, timeout time.Duration) (redis.UniversalClient, error) {
	opts, err := redisOptions(Config{RedisURL: url, TLSCAFile: caFile, CheckTimeout: timeout}.withDefaults())
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(opts), nil
}

// redisOptions turns RedisURL into go-redis universal options with the pool,
// timeouts and retry policy set explicitly: go-redis ignores context deadlines
// unless ContextTimeoutEnabled is set, and a retry on the hot path would
// double the time a request waits on a dead Redis.
func redisOptions(cfg Config) (*redis.UniversalOptions, error) {
	raw := strings.TrimSpace(cfg.RedisURL)
	if !strings.Contains(raw, "://") {
		raw = "redis://" + raw // bare "h1:p1,h2:p2"
	}
	scheme, rest, _ := strings.Cut(raw, "://")
	var sentinel, useTLS bool
	switch scheme {
	case "redis":
	case "rediss":
		useTLS = true
	case "redis+sentinel":
		sentinel = true
	case "rediss+sentinel":
		sentinel, useTLS = true, true
	default:
		return nil, fmt.Errorf("ratelimit: RedisURL scheme %q: want redis, rediss, redis+sentinel or rediss+sentinel", scheme)
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	hostPart, path, _ := strings.Cut(rest, "/")
	var userinfo string
	if i := strings.LastIndex(hostPart, "@"); i >= 0 {
		userinfo, hostPart = hostPart[:i], hostPart[i+1:]
	}
	o := &redis.UniversalOptions{
		PoolSize:              cfg.PoolSize,
		DialTimeout:           cfg.DialTimeout,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1, // no retries on the hot path
		// The Cluster client re-sends a command after a socket timeout or a
		// dropped connection up to MaxRedirects times, whatever MaxRetries
		// says. The limit script is not idempotent (a timed-out call may have
		// run), so a re-send could charge a request twice: follow no
		// redirects. A MOVED during resharding then fails one check, which
		// takes the failure mode, and go-redis reloads the slot map.
		MaxRedirects:    -1,
		DialerRetries:   1, // nor dial retries: the breaker handles outages
		PoolTimeout:     cfg.CheckTimeout,
		Protocol:        2,
		DisableIdentity: true,
	}
	if userinfo != "" {
		// Decoded by hand: url's errors quote the text they fail on, which
		// here is the password (and a bad escape is part of it).
		user, pass, _ := strings.Cut(userinfo, ":")
		var errU, errP error
		o.Username, errU = url.PathUnescape(user)
		o.Password, errP = url.PathUnescape(pass)
		if errU != nil || errP != nil {
			return nil, fmt.Errorf("ratelimit: RedisURL %q: the user name or password is not valid percent-encoding", RedactURL(cfg.RedisURL))
		}
	}
	for _, h := range strings.Split(hostPart, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, map[bool]string{true: "26379", false: "6379"}[sentinel])
		}
		o.Addrs = append(o.Addrs, h)
	}
	if len(o.Addrs) == 0 {
		return nil, fmt.Errorf("ratelimit: RedisURL %q has no host", RedactURL(cfg.RedisURL))
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: RedisURL query: %w", err)
	}
	segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	if sentinel {
		if len(segs) > 0 {
			o.MasterName, segs = segs[0], segs[1:]
		}
	}
	if len(segs) > 1 {
		return nil, fmt.Errorf("ratelimit: RedisURL path %q: want at most a database number", path)
	}
	if len(segs) == 1 {
		if o.DB, err = strconv.Atoi(segs[0]); err != nil {
			return nil, fmt.Errorf("ratelimit: RedisURL database %q: %w", segs[0], err)
		}
	}
	caFile := cfg.TLSCAFile
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "master_name":
			o.MasterName = v
		case "cluster":
			o.IsClusterMode = v == "true" || v == "1"
		case "ca_file":
			caFile = v
		case "db":
			if o.DB, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("ratelimit: RedisURL db %q: %w", v, err)
			}
		default:
			return nil, fmt.Errorf("ratelimit: RedisURL parameter %q is not supported", k)
		}
	}
	if o.MasterName != "" {
		o.SentinelUsername, o.SentinelPassword = o.Username, o.Password
	} else if sentinel {
		return nil, errors.New("ratelimit: RedisURL: Sentinel needs a master name (redis+sentinel://host:port/master)")
	}
	if (len(o.Addrs) > 1 || o.IsClusterMode) && o.MasterName == "" && o.DB != 0 {
		return nil, errors.New("ratelimit: RedisURL: Redis Cluster has only database 0")
	}
	if useTLS {
		host, _, _ := net.SplitHostPort(o.Addrs[0])
		tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile) // #nosec G304 -- redis_ca_file is operator configuration, trusted (SECURITY.md)
			if err != nil {
				return nil, fmt.Errorf("ratelimit: TLS CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ratelimit: TLS CA file %s holds no PEM certificate", caFile)
			}
			tc.RootCAs = pool
		}
		o.TLSConfig = tc
	}
	return o, nil
}

// isCluster reports whether the options produce a Cluster client, whose
// scripts must keep every key of one call in one hash slot.
func isCluster(o *redis.UniversalOptions) bool {
	return o.MasterName == "" && (len(o.Addrs) > 1 || o.IsClusterMode)
}

// RedactURL hides the credentials of a Redis URL (everything before the
// last '@' of its host part) so it can appear in errors and logs:
// "redis://***@host:6379". It does not parse the URL, so it also redacts
// one that is malformed.
func RedactURL(s string) string {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			return s[:j+3] + "***" + s[i:]
		}
		return "***" + s[i:]
	}
	return s
}
