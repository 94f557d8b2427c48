package core_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// TestOneRedisClientPerURL: the identity stage, the Admin key store and the
// limiter reach the same redis_url through one client: each one's calls
// take connections from the pool of core.Redis, not from a pool of its own.
func TestOneRedisClientPerURL(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	cfg := config.Default()
	cfg.RedisURL = "redis://" + srv.Addr
	cfg.RateLimitTimeout = time.Second // a loaded machine must not open the breaker
	ctx := context.Background()
	c, err := core.New(ctx, cfg, core.Deps{Pepper: "core-test-pepper-0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Redis == nil {
		t.Fatal("no Redis client with redis_url set")
	}
	uses := func() uint32 { s := c.Redis.PoolStats(); return s.Hits + s.Misses }
	ghost, err := identity.NewAPIKey(rand.Reader, "ghost")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"identity key lookup", func() error {
			if p := c.Identity.Authenticate(ctx, identity.Request{Authorization: "Bearer " + ghost}); p.Kind != identity.KindAnonymous {
				return fmt.Errorf("unknown key authenticated as %+v", p)
			}
			return nil
		}},
		{"admin key store", func() error {
			_, err := identity.NewRedisKeyStore(c.Redis, identity.DefaultConfig().RedisKeyPrefix).Get(ctx, "ghost")
			if !errors.Is(err, identity.ErrKeyNotFound) {
				return fmt.Errorf("get: %v, want not found", err)
			}
			return nil
		}},
		{"limit check", func() error {
			res, err := c.Limiter.Check(ctx, "", []ratelimit.Limit{{Name: "rph", Key: "{acme}:alice", Limit: 5, Period: time.Hour}})
			if err != nil || !res.Allowed || res.Degraded {
				return fmt.Errorf("%+v %v, want allowed by Redis", res, err)
			}
			return nil
		}},
	}
	for _, st := range steps {
		before := uses()
		if err := st.run(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if after := uses(); after == before {
			t.Errorf("%s: used no connection of the shared client (a client of its own?)", st.name)
		}
	}
}
