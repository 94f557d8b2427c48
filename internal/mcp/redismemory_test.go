package mcp_test

import (
	"context"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulwark-ai/bulwark/internal/mcp"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

func tool(name, def string) mcp.Tool {
	return mcp.Tool{Name: name, Hash: sha256.Sum256([]byte(def))}
}

func client(tb testing.TB, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestRedisMemorySharedByReplicas: two replicas, each with its own client
// and its own in-process memory, share one redis-server: a definition
// first listed through one and changed through the other is flagged, in
// the same session only; the session expires TTL after its last listing;
// a session holds at most maxTools names; the key names neither the
// principal nor the session id.
func TestRedisMemorySharedByReplicas(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	a := mcp.NewRedisMemory(client(t, srv.Addr), 300*time.Millisecond, 3, 0, nil, nil)
	b := mcp.NewRedisMemory(client(t, srv.Addr), 300*time.Millisecond, 3, 0, nil, nil)

	if got := a.Remember(ctx, "api_key:alice\x00sess-1", []mcp.Tool{tool("add", "v1"), tool("search", "s")}); slices.Contains(got, true) {
		t.Fatalf("first listing flagged: %v", got)
	}
	if got := b.Remember(ctx, "api_key:alice\x00sess-1", []mcp.Tool{tool("search", "s"), tool("add", "v2")}); !slices.Equal(got, []bool{false, true}) {
		t.Errorf("replica b, changed add: %v, want [false true]", got)
	}
	if got := b.Remember(ctx, "api_key:alice\x00sess-2", []mcp.Tool{tool("add", "v2")}); got[0] {
		t.Errorf("another session flagged: %v", got)
	}
	// The first definition stays the reference.
	if got := a.Remember(ctx, "api_key:alice\x00sess-1", []mcp.Tool{tool("add", "v2")}); !got[0] {
		t.Errorf("replica a, add v2 again: %v", got)
	}

	// Bounded: sess-1 holds add and search; one more name fits, the
	// fourth is not stored (so a later change of it goes unseen).
	b.Remember(ctx, "api_key:alice\x00sess-1", []mcp.Tool{tool("t3", "x"), tool("t4", "x")})
	n, err := client(t, srv.Addr).HLen(ctx, mcp.RedisKey("api_key:alice\x00sess-1")).Result()
	if err != nil || n != 3 {
		t.Errorf("hash holds %d names (%v), want 3", n, err)
	}
	keys, err := client(t, srv.Addr).Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if slices.Contains([]string{"alice", "sess-1", "sess-2"}, k) || len(k) != len("bulwark:mcp:tools:")+64 {
			t.Errorf("key %q", k)
		}
	}
	ttl, err := client(t, srv.Addr).PTTL(ctx, mcp.RedisKey("api_key:alice\x00sess-2")).Result()
	if err != nil || ttl <= 0 || ttl > 300*time.Millisecond {
		t.Errorf("ttl %v (%v), want (0, 300ms]", ttl, err)
	}
	time.Sleep(400 * time.Millisecond)
	// Expired in Redis and in b's own memory: a new first definition.
	c := mcp.NewRedisMemory(client(t, srv.Addr), 300*time.Millisecond, 3, 0, nil, nil)
	if got := c.Remember(ctx, "api_key:alice\x00sess-1", []mcp.Tool{tool("add", "v3")}); got[0] {
		t.Errorf("expired session still flagged: %v", got)
	}
}

// TestRedisMemoryFallsBack: with Redis gone, a replica compares with its
// own memory (a rug pull it saw itself is still flagged), and nothing
// blocks past the timeout.
func TestRedisMemoryFallsBack(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	m := mcp.NewRedisMemory(client(t, srv.Addr), time.Minute, 0, 100*time.Millisecond, nil, nil)
	m.Remember(ctx, "k", []mcp.Tool{tool("add", "v1")})
	srv.Stop()
	start := time.Now()
	if got := m.Remember(ctx, "k", []mcp.Tool{tool("add", "v2")}); !got[0] {
		t.Errorf("change not flagged without Redis: %v", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v without Redis", d)
	}
}
