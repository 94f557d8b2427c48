package abuse

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// observeLua counts one request of a principal and reads its offences, on
// Redis's clock, in one atomic step.
//
// KEYS[1]: the rates hash (ts, rs, ts_tok, rl, rl_tok, first); KEYS[2]: the
// offences sorted set (member "reason\x00decision id", score: seconds).
// ARGV: tokens, short tau s, baseline tau s, offence window s, key TTL s.
// Returns: {req short, tok short, req base, tok base, age s, offence
// members...}, numbers as strings (Lua numbers returned to Redis become
// integers).
const observeLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = tonumber(ARGV[1])
local ts, tb = tonumber(ARGV[2]), tonumber(ARGV[3])
local win, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'ts', 'rs', 'ks', 'rb', 'kb', 'first')
local last = tonumber(h[1]) or now
local function d(v, tau, w)
  local dt = now - last
  if dt < 0 then dt = 0 end
  return (tonumber(v) or 0) * math.exp(-dt / tau) + w / tau
end
local rs, ks = d(h[2], ts, 1), d(h[3], ts, tokens)
local rb, kb = d(h[4], tb, 1), d(h[5], tb, tokens)
local first = tonumber(h[6]) or now
redis.call('HSET', KEYS[1], 'ts', tostring(now), 'rs', tostring(rs), 'ks', tostring(ks),
  'rb', tostring(rb), 'kb', tostring(kb), 'first', tostring(first))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
local out = {tostring(rs), tostring(ks), tostring(rb), tostring(kb), tostring(now - first)}
local m = redis.call('ZRANGE', KEYS[2], 0, -1)
for i = 1, #m do out[#out + 1] = m[i] end
return out
`

// offendLua records one offence. KEYS[1]: the offences sorted set. ARGV:
// member, window s, max kept.
const offendLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
`

var (
	observeScript = redis.NewScript(observeLua)
	offendScript  = redis.NewScript(offendLua)
)

// Redis is a Tracker whose state every replica shares through Redis.
type Redis struct {
	cfg    Config
	client redis.UniversalClient
}

var _ Tracker = (*Redis)(nil)

// NewRedis returns a Tracker on client (which it does not close).
func NewRedis(cfg Config, client redis.UniversalClient) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, fmt.Errorf("abuse: nil Redis client")
	}
	return &Redis{cfg: cfg.withDefaults(), client: client}, nil
}

// keys are the principal's two keys; the principal id is the hash tag, so
// both live on one Cluster slot and the script can touch both.
func (r *Redis) keys(principal string) []string {
	tag := "{" + strings.NewReplacer("{", "(", "}", ")").Replace(principal) + "}"
	return []string{r.cfg.Prefix + tag + ":rates", r.cfg.Prefix + tag + ":offences"}
}

// Observe implements Tracker in one script call.
func (r *Redis) Observe(ctx context.Context, principal string, tokens int64) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	ttl := int64((2 * r.cfg.BaselineWindow).Seconds())
	res, err := observeScript.Run(ctx, r.client, r.keys(principal), max(tokens, 0),
		r.cfg.ShortWindow.Seconds(), r.cfg.BaselineWindow.Seconds(), r.cfg.OffenceWindow.Seconds(), ttl).StringSlice()
	if err != nil {
		return Snapshot{}, fmt.Errorf("abuse: observe: %w", err)
	}
	if len(res) < 5 {
		return Snapshot{}, fmt.Errorf("abuse: observe: %d values in the answer, want at least 5", len(res))
	}
	var f [5]float64
	for i := range f {
		if f[i], err = strconv.ParseFloat(res[i], 64); err != nil {
			return Snapshot{}, fmt.Errorf("abuse: observe: value %d: %w", i, err)
		}
	}
	s := Snapshot{Window: r.cfg.OffenceWindow, Offences: map[string]int{}, Rates: Rates{
		Requests: f[0] * 60, Tokens: f[1] * 60, BaselineRequests: f[2] * 60, BaselineTokens: f[3] * 60,
		Age: time.Duration(f[4] * float64(time.Second)),
	}}
	for _, m := range res[5:] {
		reason, _, _ := strings.Cut(m, "\x00")
		s.Offences[reason]++
	}
	return s, nil
}

// Offend implements Tracker.
func (r *Redis) Offend(ctx context.Context, principal, reason, decisionID string) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	k := r.keys(principal)
	if err := offendScript.Run(ctx, r.client, k[1:], reason+"\x00"+decisionID,
		r.cfg.OffenceWindow.Seconds(), r.cfg.MaxOffences).Err(); err != nil {
		return fmt.Errorf("abuse: offend: %w", err)
	}
	return nil
}
