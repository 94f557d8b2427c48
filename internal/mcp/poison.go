package mcp

import (
	"container/list"
	"crypto/sha256"
	"regexp"
	"sync"
	"time"
	"unicode"
)

// The tool-poisoning markers: what hidden instructions in a tool's
// description look like, beside what the injection detector scores. One
// alone is common in honest tools (an ssh tool names ~/.ssh); the default
// policy removes a tool with two, or with an injection score over the
// threshold.
var poisonRules = []struct {
	name string
	re   *regexp.Regexp
}{
	// Markup addressed to the model, not the user: <IMPORTANT>, <system>.
	{"hidden_tag", regexp.MustCompile(`(?i)<\s*/?\s*(important|system|instructions?|secret|hidden|admin)\b[^>]*>`)},
	// Files an agent's host keeps credentials in.
	{"sensitive_path", regexp.MustCompile(`(?i)(~|\$home|/home/\w+|/root)/\.(ssh|aws|gnupg|kube|docker|config/gh|netrc|npmrc|pypirc)|\bid_(rsa|ed25519|ecdsa|dsa)\b|/etc/(passwd|shadow)|\.env\b|\bmcp\.json\b|credentials\.json`)},
	// Telling the model to keep something from the user.
	{"concealment", regexp.MustCompile(`(?i)\b(do not|don't|never|must not)\s+(tell|inform|mention|notify|reveal|show|alert)\b[^.]{0,40}\buser\b|\bwithout (telling|informing|notifying)\b|\bthe user (must|should) not (know|see)\b`)},
	// Instructions to carry data out through a parameter or another tool.
	{"exfiltration", regexp.MustCompile(`(?i)\b(pass|send|include|put|add|copy)\b[^.]{0,60}\b(as|in|into|to)\s+(the\s+)?['"\x60]?\w+['"\x60]?\s*(parameter|argument|field)?\b[^.]{0,20}\b(content|contents|key|token|password|secret)s?\b|\b(read|cat|open)\b[^.]{0,30}\b(and|then)\s+(pass|send|include)\b`)},
	// Other tools' behaviour rewritten from inside this one's description.
	{"tool_shadowing", regexp.MustCompile(`(?i)\b(when|whenever|before|after) (using|calling|invoking) (any|the|this|another|other) (other )?tools?\b|\binstead of (the )?(user|recipient)\b`)},
}

// PoisonRules returns the names of the poisoning markers found in text,
// plus "invisible_text" for characters a user cannot see (zero-width,
// Unicode tag characters, bidi controls) that a model still reads.
func PoisonRules(text string) []string {
	var out []string
	for _, r := range poisonRules {
		if r.re.MatchString(text) {
			out = append(out, r.name)
		}
	}
	if hasInvisible(text) {
		out = append(out, "invisible_text")
	}
	return out
}

func hasInvisible(s string) bool {
	for _, r := range s {
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
