package mcp

import (
	"container/list"
	"crypto/sha256"
	"strings"
	"sync"
	"time"
	"unicode"
)

// The tool-poisoning markers: what hidden instructions in a tool's
// description look like, beside what the injection detector scores. One
// alone is common in honest tools (an ssh tool names ~/.ssh); the default
// policy removes a tool with two, or with an injection score over the
// threshold. Each marker is a list of lower-case phrases, matched as
// substrings of the lower-cased text: a tools/list answer holds hundreds of
// definitions, and substring search keeps the scan in microseconds.
var poisonRules = []struct {
	name    string
	phrases []string
}{
	// Markup addressed to the model, not the user: <IMPORTANT>, <system>.
	{"hidden_tag", []string{"<important", "</important", "<system", "</system", "<instruction", "</instruction",
		"<secret", "<hidden", "<admin", "[important]", "[system]", "{{system"}},
	// Files an agent's host keeps credentials in.
	{"sensitive_path", []string{"~/.ssh", "/.ssh/", "id_rsa", "id_ed25519", "id_ecdsa", "~/.aws", "/.aws/credentials",
		"~/.gnupg", "~/.kube", "/.kube/config", "~/.docker/config", "~/.netrc", "~/.npmrc", "~/.pypirc", "/etc/passwd",
		"/etc/shadow", "mcp.json", "credentials.json", "~/.config/gh", ".env file", "~/.env"}},
	// Telling the model to keep something from the user.
	{"concealment", []string{"do not tell the user", "don't tell the user", "do not mention", "don't mention",
		"never mention", "do not inform the user", "do not reveal", "never reveal", "without telling", "without informing",
		"without notifying", "the user must not", "user should not know", "keep this secret", "not visible to the user",
		"hide this from"}},
	// Instructions to carry data out through a parameter or another tool.
	{"exfiltration", []string{"pass its content", "pass the content", "pass it as", "as 'note'", "as \"note\"",
		"include the contents", "send the contents", "send its content", "and send it to", "forward all", "copy the contents",
		"in the sidenote", "as the sidenote", "bcc", "exfiltrat"}},
	// Other tools' behaviour rewritten from inside this one's description.
	{"tool_shadowing", []string{"before using this tool", "before using any", "when using any other", "when calling any",
		"whenever you use", "instead of the user", "all emails must be sent to", "otherwise the tool will not work",
		"ignore previous", "ignore all previous", "this is very important"}},
}

// PoisonRules returns the names of the poisoning markers found in text,
// plus "invisible_text" for characters a user cannot see (zero-width,
// Unicode tag characters, bidi controls) that a model still reads.
func PoisonRules(text string) []string {
	var out []string
	lower := strings.ToLower(text)
	for _, r := range poisonRules {
		for _, p := range r.phrases {
			if strings.Contains(lower, p) {
				out = append(out, r.name)
				break
			}
		}
	}
	if hasInvisible(text) {
		out = append(out, "invisible_text")
	}
	return out
}

func hasInvisible(s string) bool {
	for _, r := range s {
		if r < 0x80 {
			continue // ASCII: visible or a control the detectors see anyway
		}
		switch {
		case r >= 0xE0000 && r <= 0xE007F: // tag characters
			return true
		case r == 0x200B, r == 0x200C, r == 0x200D, r == 0x2060, r == 0xFEFF: // zero-width
			return true
		case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069: // bidi controls
			return true
		case unicode.Is(unicode.Co, r): // private use
			return true
		}
	}
	return false
}

// Memory remembers the tool definitions each MCP session was first shown,
// so that a definition that changes later in the session (a "rug pull":
// a tool approved as harmless turns malicious) is noticed. It is
// in-process: each replica remembers the sessions it served; with sticky
// sessions (Mcp-Session-Id hashing at the load balancer) that is every
// listing of a session. Memory is bounded: at most MaxSessions sessions,
// least recently listed evicted first, each forgotten TTL after its last
// listing, and at most MaxTools tools per session.
type Memory struct {
	mu       sync.Mutex
	ttl      time.Duration
	max      int
	maxTools int
	now      func() time.Time
	lru      *list.List // of *sessionTools, most recently listed in front
	sessions map[string]*list.Element
}

type sessionTools struct {
	key     string
	expires time.Time
	tools   map[string][sha256.Size]byte
}

// Defaults for NewMemory's zero arguments.
const (
	DefaultMemoryTTL      = time.Hour
	DefaultMemorySessions = 10000
	DefaultMemoryTools    = 1000
)

// NewMemory returns a Memory; zero arguments take the defaults. now is the
// clock (nil: time.Now).
func NewMemory(ttl time.Duration, maxSessions, maxTools int, now func() time.Time) *Memory {
	if ttl <= 0 {
		ttl = DefaultMemoryTTL
	}
	if maxSessions <= 0 {
		maxSessions = DefaultMemorySessions
	}
	if maxTools <= 0 {
		maxTools = DefaultMemoryTools
	}
	if now == nil {
		now = time.Now
	}
	return &Memory{ttl: ttl, max: maxSessions, maxTools: maxTools, now: now,
		lru: list.New(), sessions: make(map[string]*list.Element)}
}

// Changed records a session's listing and reports, per tool, whether the
// session was shown another definition of that name before. The first
// definition stays the reference: a tool changed once stays flagged. key
// must name the session and who holds it (principal and Mcp-Session-Id),
// so one caller cannot set another's reference. An empty key (a server
// without sessions) remembers nothing.
func (m *Memory) Changed(key string, tools []Tool) []bool {
	out := make([]bool, len(tools))
	if m == nil || key == "" {
		return out
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var s *sessionTools
	if e, ok := m.sessions[key]; ok {
		s = e.Value.(*sessionTools)
		if now.After(s.expires) {
			s.tools = make(map[string][sha256.Size]byte, len(tools))
		}
		m.lru.MoveToFront(e)
	} else {
		for len(m.sessions) >= m.max {
			oldest := m.lru.Back()
			m.lru.Remove(oldest)
			delete(m.sessions, oldest.Value.(*sessionTools).key)
		}
		s = &sessionTools{key: key, tools: make(map[string][sha256.Size]byte, len(tools))}
		m.sessions[key] = m.lru.PushFront(s)
	}
	s.expires = now.Add(m.ttl)
	for i, t := range tools {
		h, ok := s.tools[t.Name]
		switch {
		case ok:
			out[i] = h != t.Hash
		case len(s.tools) < m.maxTools:
			s.tools[t.Name] = t.Hash
		}
	}
	return out
}

// Len is how many sessions are remembered.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

// Verdict is what the scans found in one tool definition.
type Verdict struct {
	// InjectionScore is the injection detector's score of Tool.Text.
	InjectionScore float64
	// Rules are the poisoning markers (PoisonRules).
	Rules []string
}

// VerdictCache remembers the verdicts of tool definitions by their hash:
// agents list the same tools again and again (every session, every
// reconnect), and scanning hundreds of descriptions with the detectors is
// the costly part of filtering a listing. Bounded: when full, an arbitrary
// half is forgotten. Safe for concurrent use.
type VerdictCache struct {
	mu  sync.Mutex
	max int
	m   map[[sha256.Size]byte]Verdict
}

// NewVerdictCache returns a cache of at most max verdicts (0: 8192).
func NewVerdictCache(max int) *VerdictCache {
	if max <= 0 {
		max = 8192
	}
	return &VerdictCache{max: max, m: make(map[[sha256.Size]byte]Verdict)}
}

// Get returns the verdict of a definition, computing it with scan on a miss.
// A nil cache always scans.
func (c *VerdictCache) Get(t Tool, scan func(text string) Verdict) Verdict {
	if c == nil {
		return scan(t.Text)
	}
	c.mu.Lock()
	v, ok := c.m[t.Hash]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = scan(t.Text)
	c.mu.Lock()
	if len(c.m) >= c.max {
		n := 0
		for k := range c.m { // map order is random: an arbitrary half
			delete(c.m, k)
			if n++; n >= c.max/2 {
				break
			}
		}
	}
	c.m[t.Hash] = v
	c.mu.Unlock()
	return v
}
