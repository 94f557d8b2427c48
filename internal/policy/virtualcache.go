package policy

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// ruleCache is OPA's per-evaluation cache of rule values (a
// topdown.VirtualCache) whose memory is reused from one decision to the
// next. OPA's own builds a trie node, and a hash map per node, for every
// rule it evaluates: a fifth of the default policy's allocations. This one
// keeps a flat map per frame, keyed by the ref's hash, and copies keys into
// one reusable slice; Get and Put answer exactly as OPA's trie does (a
// value is found only under the ref it was put under).
//
// A ruleCache serves one evaluation at a time: get one with
// getRuleCache and give it back with putRuleCache once Eval returned.
type ruleCache struct {
	frames []map[int][]ruleCacheEntry
	top    int     // index of the active frame
	keys   ast.Ref // backing store of the entries' refs
	n      int     // entries, to bound what a pooled cache keeps
}

type ruleCacheEntry struct {
	ref       ast.Ref
	value     *ast.Term
	undefined bool
}

var _ topdown.VirtualCache = (*ruleCache)(nil)

// ruleCacheMaxEntries bounds the cache put back in the pool: an unusual
// evaluation (an MCP tools/list answer with thousands of tools) must not
// leave every later decision holding its memory.
const ruleCacheMaxEntries = 4096

var ruleCaches = sync.Pool{New: func() any {
	return &ruleCache{frames: []map[int][]ruleCacheEntry{{}}}
}}

func getRuleCache() *ruleCache { return ruleCaches.Get().(*ruleCache) }

// putRuleCache empties c and returns it to the pool.
func putRuleCache(c *ruleCache) {
	if c.n > ruleCacheMaxEntries {
		return
	}
	for i := range c.frames {
		clear(c.frames[i])
	}
	clear(c.keys) // drop the terms, keep the capacity
	c.keys, c.top, c.n = c.keys[:0], 0, 0
	ruleCaches.Put(c)
}

// Push starts a new, empty frame (a `with` statement's scope).
func (c *ruleCache) Push() {
	c.top++
	if c.top == len(c.frames) {
		c.frames = append(c.frames, map[int][]ruleCacheEntry{})
	}
}

// Pop drops the active frame and its entries.
func (c *ruleCache) Pop() {
	clear(c.frames[c.top])
	c.top--
}

// Get returns the value put under ref in the active frame: (value, false),
// (nil, true) for a ref recorded as undefined, (nil, false) when absent.
func (c *ruleCache) Get(ref ast.Ref) (*ast.Term, bool) {
	for _, e := range c.frames[c.top][ref.Hash()] {
		if e.ref.Equal(ref) {
			if e.undefined {
				return nil, true
			}
			return e.value, false
		}
	}
	return nil, false
}

// Put records value (nil: undefined) under ref in the active frame.
func (c *ruleCache) Put(ref ast.Ref, value *ast.Term) {
	h := ref.Hash()
	frame := c.frames[c.top]
	entries := frame[h]
	for i := range entries {
		if entries[i].ref.Equal(ref) {
			if value != nil {
				entries[i].value = value
			} else {
				entries[i].undefined = true
			}
			return
		}
	}
	// OPA may reuse the slice behind ref: keep a copy of its terms.
	start := len(c.keys)
	c.keys = append(c.keys, ref...)
	e := ruleCacheEntry{ref: c.keys[start:len(c.keys):len(c.keys)], value: value, undefined: value == nil}
	frame[h] = append(entries, e)
	c.n++
}

// Keys returns the refs that hold a value in the active frame.
func (c *ruleCache) Keys() []ast.Ref {
	var keys []ast.Ref
	for _, entries := range c.frames[c.top] {
		for _, e := range entries {
			if e.value != nil {
				keys = append(keys, e.ref)
			}
		}
	}
	return keys
}
