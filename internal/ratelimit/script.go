package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisEpoch is subtracted from Redis TIME (seconds) so times fit in a Lua
// double with sub-microsecond precision for centuries.
const redisEpoch = 1735689600 // 2025-01-01T00:00:00Z

// checkLua decides a batch of requests. Each request's limits are decided
// all-or-nothing with GCRA on Redis's clock (TIME, in µs since redisEpoch);
// requests of a batch run one after another, so a batch behaves exactly like
// the same requests sent one by one.
//
// KEYS: for each request, its counter keys, then its reservation key if any.
// ARGV[1] = number of requests; per request: nlimits, has_reservation (0/1),
// reservation TTL ms; per limit: emission µs, burst µs, cost, flags
// (1 = shadow, 2 = estimated).
// Returns per request: allowed (0/1), then per limit: remaining, reset µs,
// retry-after µs, exceeded (0/1).
const checkLua = `
local t = redis.call('TIME')
local now = (tonumber(t[1]) - ` + "1735689600" + `) * 1000000 + tonumber(t[2])
local out = {}
local ai, ki = 2, 1
for _ = 1, tonumber(ARGV[1]) do
  local nl = tonumber(ARGV[ai])
  local has_rsv = ARGV[ai+1] == '1'
  local rsv_ttl = tonumber(ARGV[ai+2])
  ai = ai + 3
  local base = #out
  out[base+1] = 1
  local allowed = 1
  local tent, newtat, prev, est = {}, {}, {}, {}
  for j = 1, nl do
    local key = KEYS[ki+j-1]
    local em = tonumber(ARGV[ai])
    local burst = tonumber(ARGV[ai+1])
    local cost = tonumber(ARGV[ai+2])
    local flags = tonumber(ARGV[ai+3])
    ai = ai + 4
    local shadow = flags % 2 == 1
    local tat = tent[key]
    if tat == nil then tat = tonumber(redis.call('GET', key)) or now end
    if tat < now then tat = now end
    local eps = math.min(1, em / 2)
    local nt = tat + cost * em
    local allow_at = nt - burst
    local o = base + 1 + (j-1)*4
    if allow_at - now > eps then
      local retry = allow_at - now
      if cost * em > burst + eps then retry = burst end
      local rem = math.floor((burst - (tat - now)) / em + 1e-6)
      if rem < 0 then rem = 0 end
      out[o+1] = rem
      out[o+2] = math.ceil(tat - now)
      out[o+3] = math.ceil(retry)
      out[o+4] = 1
      newtat[j] = false
      if not shadow then allowed = 0 end
    else
      local rem = math.floor((burst - (nt - now)) / em + 1e-6)
      if rem < 0 then rem = 0 end
      out[o+1] = rem
      out[o+2] = math.ceil(nt - now)
      out[o+3] = 0
      out[o+4] = 0
      newtat[j] = nt
      prev[j] = tat - now
      tent[key] = nt
      if flags >= 2 then est[#est+1] = {key, em, cost} end
    end
  end
  out[base+1] = allowed
  if allowed == 1 then
    for j = 1, nl do
      local nt = newtat[j]
      if nt then
        redis.call('SET', KEYS[ki+j-1], string.format('%.3f', nt), 'PX', math.ceil((nt - now) / 1000) + 1)
      end
    end
    if has_rsv and #est > 0 then
      redis.call('SET', KEYS[ki+nl], cjson.encode(est), 'PX', rsv_ttl)
    end
  else
    -- nothing charged: passing limits report their state without this request
    for j = 1, nl do
      if newtat[j] then
        local o = base + 1 + (j-1)*4
        local em = tonumber(ARGV[ai - 4*(nl-j+1)])
        local burst = tonumber(ARGV[ai - 4*(nl-j+1) + 1])
        out[o+1] = math.floor((burst - prev[j]) / em + 1e-6)
        out[o+2] = math.ceil(prev[j])
      end
    end
  end
  ki = ki + nl
  if has_rsv then ki = ki + 1 end
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
local now = (tonumber(t[1]) - ` + "1735689600" + `) * 1000000 + tonumber(t[2])
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

var (
	checkScript     = redis.NewScript(checkLua)
	reconcileScript = redis.NewScript(reconcileLua)
)

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

// appendArgs appends this item's KEYS and ARGV for checkLua.
func (it *item) appendArgs(keys []string, args []any, rsvTTL time.Duration) ([]string, []any) {
	keys = append(keys, it.keys...)
	hasRsv := "0"
	if it.rsvKey != "" {
		keys = append(keys, it.rsvKey)
		hasRsv = "1"
	}
	args = append(args, len(it.limits), hasRsv, rsvTTL.Milliseconds())
	for _, l := range it.limits {
		flags := 0
		if l.Shadow {
			flags |= 1
		}
		if l.Estimated {
			flags |= 2
		}
		args = append(args, strconv.FormatFloat(l.emissionMicros(), 'f', -1, 64), l.Period.Microseconds(), l.cost(), flags)
	}
	return keys, args
}

// parse reads this item's part of the script reply starting at vals[0] and
// returns how many values it consumed.
func (it *item) parse(vals []any) (int, error) {
	need := 1 + 4*len(it.limits)
	if len(vals) < need {
		return 0, fmt.Errorf("ratelimit: short script reply: %d values, want %d", len(vals), need)
	}
	num := func(i int) int64 { n, _ := vals[i].(int64); return n }
	it.res.Allowed = num(0) == 1
	it.res.RetryAfter = 0
	it.res.Degraded = false
	it.res.Limits = make([]LimitState, len(it.limits))
	for j, l := range it.limits {
		o := 1 + 4*j
		st := LimitState{
			Name: l.Name, Key: l.Key, Limit: l.Limit, Period: l.Period, Shadow: l.Shadow,
			Remaining:  num(o),
			Reset:      time.Duration(num(o+1)) * time.Microsecond,
			RetryAfter: time.Duration(num(o+2)) * time.Microsecond,
			Exceeded:   num(o+3) == 1,
		}
		if st.Exceeded && !st.Shadow {
			it.res.RetryAfter = max(it.res.RetryAfter, st.RetryAfter)
		}
		it.res.Limits[j] = st
	}
	return need, nil
}

// runScripts runs one script call per command in cmds (pipelined, one round
// trip per node) and retries any NOSCRIPT with EVAL, e.g. after a Redis
// restart emptied the script cache.
func runScripts(ctx context.Context, c redis.UniversalClient, s *redis.Script, calls []scriptCall) error {
	cmds := make([]*redis.Cmd, len(calls))
	if len(calls) == 1 {
		cmds[0] = s.EvalSha(ctx, c, calls[0].keys, calls[0].args...)
	} else {
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, call := range calls {
				cmds[i] = s.EvalSha(ctx, p, call.keys, call.args...)
			}
			return nil
		})
	}
	var retry []int
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range retry {
				cmds[i] = s.Eval(ctx, p, calls[i].keys, calls[i].args...)
			}
			return nil
		})
	}
	for i, cmd := range cmds {
		calls[i].cmd = cmd
	}
	return nil
}

type scriptCall struct {
	keys []string
	args []any
	cmd  *redis.Cmd
}

func isNoScript(err error) bool {
	if err == nil {
		return false
	}
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOSCRIPT")
}
