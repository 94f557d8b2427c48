package ratelimit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// TestSharedClient: a limiter given a Config.Client decides with it (a
// Cluster client is recognised as one, so one call's keys stay in one
// slot) and leaves it open on Close, for the identity stage that shares it.
func TestSharedClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		url         func(t *testing.T) string
		wantCluster bool
	}{
		{"single node", func(t *testing.T) string { return "redis://" + redisserver.Start(t).Addr }, false},
		{"cluster", func(t *testing.T) string { return "redis://" + strings.Join(redisserver.StartCluster(t, 3).Addrs, ",") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := tt.url(t)
			rdb, err := NewRedisClient(url, "", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			l, err := New(Config{RedisURL: url, Client: rdb, CheckTimeout: 2 * time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if l.cluster != tt.wantCluster {
				t.Fatalf("cluster = %v, want %v", l.cluster, tt.wantCluster)
			}
			limits := []Limit{{Name: "rph", Key: "{acme}:alice", Limit: 1, Period: time.Hour}}
			for i, want := range []bool{true, false} {
				res, err := l.Check(context.Background(), "", limits)
				if err != nil || res.Degraded || res.Allowed != want {
					t.Fatalf("check %d: allowed %v degraded %v err %v, want allowed %v from Redis", i, res.Allowed, res.Degraded, err, want)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Ping(context.Background()).Err(); err != nil {
				t.Fatalf("shared client closed by the limiter: %v", err)
			}
		})
	}
}

func TestSharedClientNeedsURL(t *testing.T) {
	t.Parallel()
	rdb, err := NewRedisClient("redis://127.0.0.1:1", "", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, err := New(Config{Client: rdb}, nil); err == nil {
		t.Fatal("New accepted a Client without its RedisURL")
	}
}
