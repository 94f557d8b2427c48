package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisEpoch is subtracted from Redis TIME (seconds) so times fit in a Lua
// double with sub-microsecond precision for centuries.
// It is spliced into the scripts' source, hence a string.
const redisEpoch = "1735689600" // 2025-01-01T00:00:00Z

// checkLua decides a batch of requests. Each request's limits are decided
// all-or-nothing with GCRA on Redis's clock (TIME once per batch, in µs since
// redisEpoch); requests of a batch run one after another, so a batch behaves
// exactly like the same requests sent one by one.
//
// It is written to cost Redis little per request: one MGET reads every
// counter of the batch, a Lua table carries counters from one request to the
// next, and each counter the batch charged is written once at the end (SET
// with PX; numbers are passed to redis.call unformatted, which Redis renders
// with full double precision).
//
// KEYS: for each request, its counter keys, then its reservation key if any.
// ARGV[1] = reservation TTL ms; then per request: nlimits*2 + has_reservation;
// per limit: limit, burst µs (= period), cost, flags (1 = shadow,
// 2 = estimated). The emission interval is burst/limit, the same IEEE
// division Go would do.
// Returns, per request and limit: remaining, reset µs, retry-after µs. A
// limit is exceeded exactly when its retry-after is > 0 (it is then ≥ 1).
const checkLua = `
local tonumber, floor, ceil = tonumber, math.floor, math.ceil
local t = redis.call('TIME')
local now = (tonumber(t[1]) - ` + redisEpoch + `) * 1000000 + tonumber(t[2])
local nk = #KEYS
local vals
if nk <= 4000 then
  vals = redis.call('MGET', unpack(KEYS))
else
  vals = {}
  for i = 1, nk, 4000 do
    local part = redis.call('MGET', unpack(KEYS, i, math.min(i + 3999, nk)))
    for j = 1, #part do vals[i + j - 1] = part[j] end
  end
end
-- cur: counters charged so far in this batch (written once at the end);
-- undo: this request's tentative charges, reverted if it is denied.
local cur, dirty, nd = {}, {}, 0
local undo, prev = {}, {}
local out, n = {}, 0
local ai, ki = 2, 1
local nargs = #ARGV
while ai <= nargs do
  local h = tonumber(ARGV[ai])
  ai = ai + 1
  local has_rsv = h % 2 == 1
  local nl = (h - h % 2) / 2
  local allowed = true
  local nu, est = 0, nil
  local a0, n0 = ai, n
  for k = ki, ki + nl - 1 do
    local key = KEYS[k]
    local burst = tonumber(ARGV[ai+1])
    local em = burst / tonumber(ARGV[ai])
    local cost = tonumber(ARGV[ai+2])
    local flags = tonumber(ARGV[ai+3])
    ai = ai + 4
    local c = cur[key]
    local tat = c or tonumber(vals[k]) or now
    if tat < now then tat = now end
    local eps = em / 2
    if eps > 1 then eps = 1 end
    local nt = tat + cost * em
    local wait = nt - burst - now
    if wait > eps then
      if cost * em > burst + eps then wait = burst end
      local rem = floor((burst - (tat - now)) / em + 1e-6)
      if rem < 0 then rem = 0 end
      out[n+1] = rem
      out[n+2] = ceil(tat - now)
      out[n+3] = ceil(wait)
      prev[k] = false
      if flags % 2 == 0 then allowed = false end
    else
      local rem = floor((burst - (nt - now)) / em + 1e-6)
      if rem < 0 then rem = 0 end
      out[n+1] = rem
      out[n+2] = ceil(nt - now)
      out[n+3] = 0
      prev[k] = tat - now
      undo[nu+1] = key
      undo[nu+2] = c or false
      nu = nu + 2
      cur[key] = nt
      if flags >= 2 then
        if est == nil then est = {} end
        est[#est+1] = {key, em, cost}
      end
    end
    n = n + 3
  end
  if allowed then
    for i = 1, nu, 2 do
      if undo[i+1] == false then
        nd = nd + 1
        dirty[nd] = undo[i]
      end
    end
    if has_rsv and est then
      redis.call('SET', KEYS[ki+nl], cjson.encode(est), 'PX', ARGV[1])
    end
  else
    -- nothing charged: passing limits report their state without this
    -- request, and the batch's counters go back to before it
    for i = nu - 1, 1, -2 do
      local c = undo[i+1]
      if c == false then c = nil end
      cur[undo[i]] = c
    end
    for j = 0, nl - 1 do
      local p = prev[ki+j]
      if p then
        local a = a0 + 4 * j
        local burst = tonumber(ARGV[a+1])
        local em = burst / tonumber(ARGV[a])
        out[n0 + 3*j + 1] = floor((burst - p) / em + 1e-6)
        out[n0 + 3*j + 2] = ceil(p)
      end
    end
  end
  ki = ki + nl
  if has_rsv then ki = ki + 1 end
end
for i = 1, nd do
  local key = dirty[i]
  local nt = cur[key]
  redis.call('SET', key, nt, 'PX', ceil((nt - now) / 1000) + 1)
end
return out
`

// reconcileLua replaces a reservation's estimate with the actual usage, once.
// KEYS[1] = reservation key, KEYS[2..] = its counters (declared for Cluster).
// ARGV[1] = actual units. Returns -1 unknown/expired, 0 already reconciled,
// 1 applied.
const reconcileLua = `
local v = redis.call('GET', KEYS[1])
if not v then return -1 end
if v == 'done' then return 0 end
local t = redis.call('TIME')
local now = (tonumber(t[1]) - ` + redisEpoch + `) * 1000000 + tonumber(t[2])
local actual = tonumber(ARGV[1])
for _, e in ipairs(cjson.decode(v)) do
  local key, em, cost = e[1], e[2], e[3]
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local nt = tat + (actual - cost) * em
  if nt > now then
    redis.call('SET', key, string.format('%.3f', nt), 'PX', math.ceil((nt - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
redis.call('SET', KEYS[1], 'done', 'KEEPTTL')
return 1
`

var reconcileScript = redis.NewScript(reconcileLua)

// item is one Check waiting in (or bypassing) the batcher.
type item struct {
	ctx      context.Context
	limits   []Limit
	keys     []string
	rsvKey   string // "" when the request has no estimated limit
	slot     int
	enqueued time.Time
	res      Result
	err      error
	done     chan struct{}
	timer    *time.Timer // bounds the caller's wait to CheckTimeout; reused
}

// appendKeys appends this item's KEYS for checkLua: its counters, then its
// reservation key if any.
func (it *item) appendKeys(args []any) []any {
	for _, k := range it.keys {
		args = append(args, k)
	}
	if it.rsvKey != "" {
		args = append(args, it.rsvKey)
	}
	return args
}

// appendArgv appends this item's ARGV for checkLua.
func (it *item) appendArgv(args []any) []any {
	h := 2 * len(it.limits)
	if it.rsvKey != "" {
		h++
	}
	args = append(args, h)
	for _, l := range it.limits {
		flags := 0
		if l.Shadow {
			flags |= 1
		}
		if l.Estimated {
			flags |= 2
		}
		args = append(args, l.Limit, l.Period.Microseconds(), l.cost(), flags)
	}
	return args
}

// parse reads this item's part of the script reply starting at vals[0] and
// returns how many values it consumed.
func (it *item) parse(vals []int64) (int, error) {
	need := 3 * len(it.limits)
	if len(vals) < need {
		return 0, fmt.Errorf("ratelimit: short script reply: %d values, want %d", len(vals), need)
	}
	it.res.Allowed = true
	it.res.RetryAfter = 0
	it.res.Degraded = false
	it.res.Limits = make([]LimitState, len(it.limits))
	for j, l := range it.limits {
		o := 3 * j
		st := LimitState{
			Remaining:  vals[o],
			Reset:      time.Duration(vals[o+1]) * time.Microsecond,
			RetryAfter: time.Duration(vals[o+2]) * time.Microsecond,
			Exceeded:   vals[o+2] > 0,
		}
		st.of(l, l.Limit)
		if st.Exceeded && !st.Shadow {
			it.res.Allowed = false
			it.res.RetryAfter = max(it.res.RetryAfter, st.RetryAfter)
		}
		it.res.Limits[j] = st
	}
	return need, nil
}

// runScripts sends one checkLua call per entry of calls (pipelined, one
// round trip per node) and resends any NOSCRIPT with EVAL, e.g. after a
// Redis restart emptied the script cache (a NOSCRIPT call ran nothing, so
// this cannot charge twice). Replies are read as integers, unboxed.
func runScripts(ctx context.Context, c redis.UniversalClient, calls []scriptCall) {
	if len(calls) == 1 {
		calls[0].cmd = newCheckCmd(ctx, calls[0].args)
		_ = c.Process(ctx, calls[0].cmd)
	} else {
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range calls {
				calls[i].cmd = newCheckCmd(ctx, calls[i].args)
				_ = p.Process(ctx, calls[i].cmd)
			}
			return nil
		})
	}
	var retry []int
	for i := range calls {
		if isNoScript(calls[i].cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 {
		return
	}
	_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range retry {
			args := calls[i].args
			args[0], args[1] = "eval", checkLua
			calls[i].cmd = newCheckCmd(ctx, args)
			_ = p.Process(ctx, calls[i].cmd)
		}
		return nil
	})
}

func newCheckCmd(ctx context.Context, args []any) *redis.IntSliceCmd {
	cmd := redis.NewIntSliceCmd(ctx, args...)
	cmd.SetFirstKeyPos(3) // KEYS start at the 4th argument (Cluster routing)
	return cmd
}

// checkSHA is checkLua's SHA1 for EVALSHA.
var checkSHA = redis.NewScript(checkLua).Hash()

// scriptCall is one EVALSHA of checkLua: args is the whole command
// ("evalsha", sha, numkeys, KEYS..., ARGV...).
type scriptCall struct {
	args []any
	cmd  *redis.IntSliceCmd
}

func isNoScript(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, redis.ErrNoScript) {
		return true
	}
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOSCRIPT")
}
