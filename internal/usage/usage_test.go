package usage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bulwark-ai/bulwark/internal/usage"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// stores runs a test against every backend: in-process, one real
// redis-server and a real three-node Cluster.
func stores(t *testing.T, fn func(t *testing.T, newStore func() *usage.Store)) {
	t.Run("local", func(t *testing.T) {
		s := usage.NewLocal(nil)
		fn(t, func() *usage.Store { return s })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redisserver.Start(t)
		fn(t, func() *usage.Store {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = c.Close() })
			return usage.NewRedis(c, "")
		})
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redisserver.StartCluster(t, 3)
		fn(t, func() *usage.Store {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs})
			t.Cleanup(func() { _ = c.Close() })
			return usage.NewRedis(c, "")
		})
	})
}

func TestStoreAddAndQuery(t *testing.T) {
	stores(t, func(t *testing.T, newStore func() *usage.Store) {
		ctx := context.Background()
		s := newStore()
		// Buckets expire (minutes after two days): the test writes now, and
		// a month ago for the month rows.
		at := time.Now().UTC().Truncate(time.Minute).Add(5 * time.Second)
		prev := at.AddDate(0, -1, 0)
		month, hour, minute := usage.Month.Start(at).Format(time.DateTime), usage.Hour.Start(at).Format(time.DateTime), usage.Minute.Start(at).Format(time.DateTime)
		prevMonth := usage.Month.Start(prev).Format(time.DateTime)
		add := func(e usage.Entry) usage.Period {
			t.Helper()
			p, err := s.Add(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		add(usage.Entry{Tenant: "acme", Principal: "alice", Model: "gpt-4o", At: at,
			Totals: usage.Totals{InputTokens: 100, OutputTokens: 20, CachedTokens: 40, Requests: 1, CostNanoUSD: 1000}})
		add(usage.Entry{Tenant: "acme", Principal: "bob", Model: "gpt-4o", At: at.Add(10 * time.Second),
			Totals: usage.Totals{InputTokens: 5, Requests: 1, Denials: 1}})
		p := add(usage.Entry{Tenant: "acme", Principal: "alice", Model: "claude-3", At: at.Add(20 * time.Second),
			Totals: usage.Totals{InputTokens: 7, OutputTokens: 3, Requests: 1, CostNanoUSD: 500}})
		// Another month: its totals are not this month's.
		add(usage.Entry{Tenant: "acme", Principal: "alice", Model: "gpt-4o", At: prev,
			Totals: usage.Totals{InputTokens: 1000, Requests: 1}})

		wantMonth := usage.Totals{InputTokens: 112, OutputTokens: 23, CachedTokens: 40, Requests: 3, Denials: 1, CostNanoUSD: 1500}
		if p.Month != wantMonth || p.Day != wantMonth {
			t.Errorf("period after third add: month %+v day %+v, want %+v for both", p.Month, p.Day, wantMonth)
		}
		if p.MonthBefore != 1000 {
			t.Errorf("MonthBefore = %d, want 1000", p.MonthBefore)
		}

		cases := []struct {
			name string
			q    usage.Query
			want []string
		}{
			{"tenant by month", usage.Query{Tenant: "acme", From: at.AddDate(0, -2, 0), To: at.AddDate(0, 1, 0), Granularity: usage.Month},
				[]string{prevMonth + " gpt-4o in=1000 out=0 cached=0 req=1 deny=0 cost=0",
					month + " claude-3 in=7 out=3 cached=0 req=1 deny=0 cost=500",
					month + " gpt-4o in=105 out=20 cached=40 req=2 deny=1 cost=1000"}},
			{"principal by hour, one model", usage.Query{Tenant: "acme", Principal: "alice", Model: "gpt-4o", From: at.Add(-2 * time.Hour), To: at.Add(time.Hour), Granularity: usage.Hour},
				[]string{hour + " gpt-4o in=100 out=20 cached=40 req=1 deny=0 cost=1000"}},
			{"principal of another tenant", usage.Query{Tenant: "other", Principal: "alice", From: at.Add(-time.Hour), To: at.Add(time.Hour), Granularity: usage.Minute}, nil},
			{"principal without the tenant", usage.Query{Principal: "alice", From: at.Add(-time.Hour), To: at.Add(time.Hour), Granularity: usage.Minute}, nil},
			{"by minute", usage.Query{Tenant: "acme", Model: "claude-3", From: at.Add(-time.Minute), To: at.Add(time.Minute), Granularity: usage.Minute},
				[]string{minute + " claude-3 in=7 out=3 cached=0 req=1 deny=0 cost=500"}},
		}
		for _, c := range cases {
			rows, err := s.Query(ctx, c.q)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, fmt.Sprintf("%s %s in=%d out=%d cached=%d req=%d deny=%d cost=%d", r.Start.Format(time.DateTime), r.Model,
					r.InputTokens, r.OutputTokens, r.CachedTokens, r.Requests, r.Denials, r.CostNanoUSD))
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("%s:\ngot\n%s\nwant\n%s", c.name, strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		}
	})
}

func TestStoreQueryErrors(t *testing.T) {
	s := usage.NewLocal(nil)
	now := time.Now()
	for name, q := range map[string]usage.Query{
		"no subject":   {From: now, To: now.Add(time.Hour)},
		"empty range":  {Tenant: "t", From: now, To: now},
		"too many":     {Tenant: "t", From: now, To: now.AddDate(1, 0, 0), Granularity: usage.Minute},
		"bad granular": {Tenant: "t", From: now, To: now.Add(time.Hour), Granularity: "week"},
	} {
		if _, err := s.Query(context.Background(), q); !errors.Is(err, usage.ErrBadQuery) {
			t.Errorf("%s: err = %v, want ErrBadQuery", name, err)
		}
	}
}

// TestStoreConcurrentReplicas: three clients (replicas) adding at once to
// one Redis lose nothing, and each crossing of a cost threshold is seen by
// exactly one Add.
func TestStoreConcurrentReplicas(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	var replicas []*usage.Store
	for range 3 {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { _ = c.Close() })
		replicas = append(replicas, usage.NewRedis(c, ""))
	}
	const per = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	crossings := 0
	for _, s := range replicas {
		wg.Go(func() {
			for range per {
				p, err := s.Add(ctx, usage.Entry{Tenant: "acme", Principal: "p", Model: "m",
					Totals: usage.Totals{InputTokens: 3, OutputTokens: 2, Requests: 1, CostNanoUSD: 10}})
				if err != nil {
					t.Error(err)
					return
				}
				if p.MonthBefore < 700 && p.Month.CostNanoUSD >= 700 {
					mu.Lock()
					crossings++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	rows, err := replicas[0].Query(ctx, usage.Query{Tenant: "acme", From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour), Granularity: usage.Day})
	if err != nil {
		t.Fatal(err)
	}
	var sum usage.Totals
	for _, r := range rows {
		sum.Add(r.Totals)
	}
	want := usage.Totals{InputTokens: 3 * 3 * per, OutputTokens: 2 * 3 * per, Requests: 3 * per, CostNanoUSD: 10 * 3 * per}
	if sum != want {
		t.Errorf("sum = %+v, want %+v", sum, want)
	}
	if crossings != 1 {
		t.Errorf("threshold crossed by %d adds, want exactly 1", crossings)
	}
}
