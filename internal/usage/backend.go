package usage

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedis returns a Store whose buckets live in Redis, shared by every
// replica (client may be a Cluster client: the keys of one Add share the
// hash tag of its subject, the tenant's). prefix "" is DefaultPrefix.
func NewRedis(client redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{prefix: prefix, b: &redisBackend{c: client}}
}

// NewLocal returns a Store whose buckets live in this process (no Redis):
// each replica then counts only its own exchanges. now is its clock for
// expiry (nil: time.Now).
func NewLocal(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{prefix: DefaultPrefix, b: &localBackend{now: now, m: map[string]*localBucket{}}}
}

// addScript increments the fields of every key in one atomic step and
// returns the totals of KEYS[1] (the month bucket) and KEYS[2] (the day
// bucket), with KEYS[1]'s cost before the increment. ARGV: model, the six
// values (in, out, cached, req, deny, cost), then one expiry (Unix
// seconds) per key. Every key of one call shares one hash tag.
var addScript = redis.NewScript(`
local names = {'in', 'out', 'cached', 'req', 'deny', 'cost'}
local model = ARGV[1]
local before = redis.call('HGET', KEYS[1], 'cost|') or '0'
for i = 1, #KEYS do
  for j = 1, 6 do
    local v = tonumber(ARGV[1 + j])
    if v ~= 0 then
      redis.call('HINCRBY', KEYS[i], names[j] .. '|' .. model, v)
      redis.call('HINCRBY', KEYS[i], names[j] .. '|', v)
    end
  end
  redis.call('EXPIREAT', KEYS[i], ARGV[7 + i])
end
local out = {before}
for k = 1, 2 do
  local v = redis.call('HMGET', KEYS[k], 'in|', 'out|', 'cached|', 'req|', 'deny|', 'cost|')
  for j = 1, 6 do out[#out + 1] = v[j] or '0' end
end
return out
`)

type redisBackend struct{ c redis.UniversalClient }

func (r *redisBackend) add(ctx context.Context, keys []string, expireAt []int64, model string, vals [6]int64) (Totals, Totals, int64, error) {
	args := make([]any, 0, 7+len(expireAt))
	args = append(args, model)
	for _, v := range vals {
		args = append(args, v)
	}
	for _, e := range expireAt {
		args = append(args, e)
	}
	res, err := addScript.Run(ctx, r.c, keys, args...).StringSlice()
	if err != nil {
		return Totals{}, Totals{}, 0, err
	}
	if len(res) != 13 {
		return Totals{}, Totals{}, 0, fmt.Errorf("script returned %d values, want 13", len(res))
	}
	n := make([]int64, 13)
	for i, s := range res {
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return Totals{}, Totals{}, 0, fmt.Errorf("script returned %q: %w", s, err)
		}
	}
	return totalsOf(n[1:7]), totalsOf(n[7:13]), n[0], nil
}

func totalsOf(v []int64) Totals {
	return Totals{InputTokens: v[0], OutputTokens: v[1], CachedTokens: v[2], Requests: v[3], Denials: v[4], CostNanoUSD: v[5]}
}

// read fetches every key with HGETALL in one pipeline: one round trip (the
// keys of one query share a hash tag, so a Cluster sends them to one node).
func (r *redisBackend) read(ctx context.Context, keys []string) ([]map[string]int64, error) {
	pipe := r.c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HGetAll(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]map[string]int64, len(keys))
	for i, c := range cmds {
		m := c.Val()
		if len(m) == 0 {
			continue
		}
		out[i] = make(map[string]int64, len(m))
		for f, s := range m {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("field %q of %s: %w", f, keys[i], err)
			}
			out[i][f] = v
		}
	}
	return out, nil
}

// localField is a bucket field: metric index (metricNames) and model
// ("" for the total over every model); a struct, so counting allocates no
// field name.
type localField struct {
	metric int
	model  string
}

type localBucket struct {
	fields   map[localField]int64
	expireAt int64
}

// localBackend is the in-process store: the same keys and fields as in
// Redis, under one lock; expired buckets are dropped as Adds come.
type localBackend struct {
	now    func() time.Time
	mu     sync.Mutex
	m      map[string]*localBucket
	nextGC int64
}

func (l *localBackend) add(_ context.Context, keys []string, expireAt []int64, model string, vals [6]int64) (Totals, Totals, int64, error) {
	now := l.now().Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now >= l.nextGC {
		for k, b := range l.m {
			if b.expireAt <= now {
				delete(l.m, k)
			}
		}
		l.nextGC = now + 60
	}
	var before int64
	if b := l.m[keys[0]]; b != nil {
		before = b.fields[localField{metric: 5}]
	}
	for i, k := range keys {
		b := l.m[k]
		if b == nil {
			b = &localBucket{fields: map[localField]int64{}}
			l.m[k] = b
		}
		for j, v := range vals {
			if v != 0 {
				b.fields[localField{j, model}] += v
				b.fields[localField{metric: j}] += v
			}
		}
		b.expireAt = expireAt[i]
	}
	return l.totals(keys[0]), l.totals(keys[1]), before, nil
}

func (l *localBackend) totals(k string) Totals {
	var t Totals
	if b := l.m[k]; b != nil {
		for j, name := range metricNames {
			t.set(name, b.fields[localField{metric: j}])
		}
	}
	return t
}

func (l *localBackend) read(_ context.Context, keys []string) ([]map[string]int64, error) {
	now := l.now().Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]map[string]int64, len(keys))
	for i, k := range keys {
		b := l.m[k]
		if b == nil || b.expireAt <= now {
			continue
		}
		out[i] = make(map[string]int64, len(b.fields))
		for f, v := range b.fields {
			out[i][metricNames[f.metric]+"|"+f.model] = v
		}
	}
	return out, nil
}
