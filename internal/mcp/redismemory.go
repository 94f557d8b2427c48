package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// ToolMemory remembers the tool definitions each MCP session was first
// shown and reports, per tool of a new listing, whether the session was
// shown another definition of that name before (a rug pull). Memory keeps
// it in-process; RedisMemory shares it between replicas.
type ToolMemory interface {
	Remember(ctx context.Context, key string, tools []Tool) []bool
}

var (
	_ ToolMemory = (*Memory)(nil)
	_ ToolMemory = (*RedisMemory)(nil)
)

// Remember is Changed; ctx is unused (nothing blocks).
func (m *Memory) Remember(_ context.Context, key string, tools []Tool) []bool {
	return m.Changed(key, tools)
}

// RedisMemory is the rug-pull memory shared by every replica through Redis:
// without it, a session whose listings land on different replicas (no
// sticky sessions) would compare each listing only with what that replica
// saw. One Redis hash per session, named by the SHA-256 of the session key
// (principal and Mcp-Session-Id: neither is stored), tool name → the
// definition's hash, first definition kept; it expires TTL after the
// session's last listing, and holds at most MaxTools names. One script call
// per listing, atomic, so two replicas listing at once agree on the first
// definition.
//
// When Redis fails (down, slow past Timeout), the listing is compared
// with the replica's own in-process memory, which every listing also
// updates: a rug pull is still caught by a replica that saw the first
// definition, and Redis's answer is used again as soon as it is back.
type RedisMemory struct {
	rdb      redis.Scripter
	ttl      time.Duration
	maxTools int
	timeout  time.Duration
	local    *Memory
	logger   *slog.Logger
}

// DefaultRedisMemoryTimeout bounds one script call of RedisMemory.
const DefaultRedisMemoryTimeout = 200 * time.Millisecond

// NewRedisMemory returns a RedisMemory over rdb; zero ttl and maxTools take
// Memory's defaults, zero timeout DefaultRedisMemoryTimeout; local is the
// fallback (nil: a new Memory with ttl); logger may be nil.
func NewRedisMemory(rdb redis.Scripter, ttl time.Duration, maxTools int, timeout time.Duration, local *Memory, logger *slog.Logger) *RedisMemory {
	if ttl <= 0 {
		ttl = DefaultMemoryTTL
	}
	if maxTools <= 0 {
		maxTools = DefaultMemoryTools
	}
	if timeout <= 0 {
		timeout = DefaultRedisMemoryTimeout
	}
	if local == nil {
		local = NewMemory(ttl, 0, maxTools, nil)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &RedisMemory{rdb: rdb, ttl: ttl, maxTools: maxTools, timeout: timeout, local: local, logger: logger}
}

// rememberLua: KEYS[1] the session's hash; ARGV[1] its TTL in ms, ARGV[2]
// the most names it holds, then name, hash pairs. Returns 1 per tool whose
// name already holds another hash, 0 otherwise (a new name is stored while
// there is room). The first definition stays the reference.
const rememberLua = `
local out = {}
local n = redis.call('HLEN', KEYS[1])
local max = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local h = redis.call('HGET', KEYS[1], ARGV[i])
  if h then
    if h == ARGV[i+1] then out[#out+1] = 0 else out[#out+1] = 1 end
  else
    if n < max then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
      n = n + 1
    end
    out[#out+1] = 0
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return out
`

var rememberScript = redis.NewScript(rememberLua)

// RedisKey is the Redis key of a session's tool definitions.
func RedisKey(sessionKey string) string {
	h := sha256.Sum256([]byte(sessionKey))
	return "bulwark:mcp:tools:" + hex.EncodeToString(h[:])
}

// Remember records a session's listing in Redis and reports which tools
// changed (see ToolMemory); an empty key remembers nothing.
func (m *RedisMemory) Remember(ctx context.Context, key string, tools []Tool) []bool {
	local := m.local.Changed(key, tools)
	if key == "" || len(tools) == 0 {
		return local
	}
	out, err := m.remember(ctx, key, tools)
	if err != nil {
		m.logger.Warn("MCP tool memory: Redis unavailable, comparing with this replica's memory", "error", err)
		return local
	}
	for i := range out {
		out[i] = out[i] || local[i]
	}
	return out
}

func (m *RedisMemory) remember(ctx context.Context, key string, tools []Tool) ([]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	args := make([]any, 0, 2+2*len(tools))
	args = append(args, m.ttl.Milliseconds(), m.maxTools)
	for _, t := range tools {
		args = append(args, t.Name, t.Hash[:])
	}
	res, err := rememberScript.Run(ctx, m.rdb, []string{RedisKey(key)}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("mcp: redis tool memory: %w", err)
	}
	if len(res) != len(tools) {
		return nil, fmt.Errorf("mcp: redis tool memory: %d answers for %d tools", len(res), len(tools))
	}
	out := make([]bool, len(tools))
	for i, v := range res {
		out[i] = v == 1
	}
	return out, nil
}
