package redisserver

import (
	"strings"
	"testing"
)

func TestStartAndCluster(t *testing.T) {
	s := Start(t)
	if out, err := command(s.Addr, "PING"); err != nil || !strings.Contains(out, "PONG") {
		t.Fatalf("PING = %q, %v", out, err)
	}
	s.Stop()
	if _, err := command(s.Addr, "PING"); err == nil {
		t.Fatalf("PING after Stop succeeded")
	}
	s.Restart(t)
	if _, err := command(s.Addr, "PING"); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	c := StartCluster(t, 3)
	if len(c.Addrs) != 3 {
		t.Fatalf("cluster has %d nodes", len(c.Addrs))
	}
}
