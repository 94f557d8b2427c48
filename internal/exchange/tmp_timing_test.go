package exchange_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/mcp"
)

func TestTmpTiming(t *testing.T) {
	ctx := context.Background()
	c, key := newMCPCore(t)
	answer := []byte(toolsListAnswer(197, poisonDesc))
	r, _ := mcp.ParseResponse(answer)
	st := time.Now()
	l, _ := mcp.ParseToolsList(r)
	t.Logf("parse %v", time.Since(st))
	st = time.Now()
	for _, tl := range l.Tools {
		mcp.PoisonRules(tl.Text)
	}
	t.Logf("poison %v", time.Since(st))
	for i := 0; i < 3; i++ {
		x := c.Start("bench")
		mcpRequest(t, x, key, "bench", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		x.ResponseHeaders(ctx, 200, map[string]string{"content-type": "application/json"}, false)
		st = time.Now()
		x.ResponseBody(ctx, answer)
		t.Logf("body %v", time.Since(st))
		x.End(ctx)
	}
	_ = exchange.BodyWhole
}
