package rls

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	yaml "go.yaml.in/yaml/v3"
)

// maxConfigBytes bounds one YAML file: a rate-limit config is a few KB; a
// larger file is a mistake (or a YAML bomb) and is refused, not parsed.
const maxConfigBytes = 4 << 20

// maxDepth bounds nested descriptors. Envoy's descriptors have a handful of
// entries; the bound keeps a hostile file from recursing the loader deep.
const maxDepth = 32

// Config is a loaded envoy/ratelimit configuration: one descriptor tree per
// domain. It is immutable once loaded, so the server swaps whole Configs on
// reload and a request always sees one consistent version.
type Config struct {
	domains map[string]*node
	// Files are the files it was loaded from, for status and logs.
	Files []string
	// Rules counts the descriptors that carry a rate_limit.
	Rules int
}

// node is one level of a domain's descriptor tree.
type node struct {
	children  map[string]*node // by "key" or "key_value", as envoy/ratelimit keys them
	wildcards []wildcard       // children whose value holds '*', in file order
	rule      *rule            // nil: no limit at this level
}

// wildcard is a child matched by pattern: "key_pre*fix" split on '*'.
type wildcard struct {
	key   string
	parts []string
	share bool // share_threshold: every matching value shares one counter
}

// rule is one rate_limit of the file.
type rule struct {
	// id is the descriptor's full path ("domain.key_value.key2"), the
	// counter's name and the metric label, as envoy/ratelimit names stats.
	id string
	// name is the rate_limit's optional name, the target of replaces.
	name     string
	replaces []string
	unit     rlsv3.RateLimitResponse_RateLimit_Unit
	perUnit  uint32
	period   time.Duration
	// unlimited: matched descriptors are never counted nor limited.
	unlimited bool
	shadow    bool
	// limit is what the response reports as the descriptor's current limit.
	limit *rlsv3.RateLimitResponse_RateLimit
}

// The YAML shapes, exactly envoy/ratelimit's keys. Unknown keys are an
// error (KnownFields), as they are in envoy/ratelimit.
type yamlRoot struct {
	Domain      string           `yaml:"domain"`
	Descriptors []yamlDescriptor `yaml:"descriptors"`
}

type yamlDescriptor struct {
	Key         string           `yaml:"key"`
	Value       string           `yaml:"value"`
	RateLimit   *yamlRateLimit   `yaml:"rate_limit"`
	Descriptors []yamlDescriptor `yaml:"descriptors"`
	ShadowMode  bool             `yaml:"shadow_mode"`
	// QuotaMode changes what OVER_LIMIT means; Bulwark does not implement
	// it and says so rather than count differently.
	QuotaMode bool `yaml:"quota_mode"`
	// DetailedMetric and ValueToMetric shape envoy/ratelimit's statsd
	// names only; Bulwark's metrics are bounded by rule, so they are
	// accepted and have no effect.
	DetailedMetric bool `yaml:"detailed_metric"`
	ValueToMetric  bool `yaml:"value_to_metric"`
	ShareThreshold bool `yaml:"share_threshold"`
	// Metadata is returned as dynamic metadata by envoy/ratelimit when
	// enabled; Bulwark accepts and ignores it.
	Metadata map[string]any `yaml:"metadata"`
}

type yamlRateLimit struct {
	RequestsPerUnit uint32         `yaml:"requests_per_unit"`
	Unit            string         `yaml:"unit"`
	Unlimited       bool           `yaml:"unlimited"`
	Name            string         `yaml:"name"`
	Replaces        []yamlReplaces `yaml:"replaces"`
}

type yamlReplaces struct {
	Name string `yaml:"name"`
}

// Load reads an envoy/ratelimit configuration from a file, or from every
// *.yaml / *.yml file directly in a directory (names starting with '.' are
// skipped: Kubernetes ConfigMap mounts keep their old versions there). Each
// file holds one domain; a domain in two files is an error, as in
// envoy/ratelimit without MERGE_DOMAIN_CONFIG.
func Load(path string) (*Config, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("rls config: %w", err)
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("rls config: %w", err)
		}
		for _, e := range entries {
			n := e.Name()
			if strings.HasPrefix(n, ".") || (!strings.HasSuffix(n, ".yaml") && !strings.HasSuffix(n, ".yml")) {
				continue
			}
			p := filepath.Join(path, n)
			if fi, err := os.Stat(p); err != nil || fi.IsDir() {
				continue
			}
			files = append(files, p)
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("rls config: %s holds no .yaml or .yml file", path)
		}
	}
	cfg := &Config{domains: map[string]*node{}}
	for _, f := range files {
		data, err := readLimited(f)
		if err != nil {
			return nil, err
		}
		if err := cfg.add(filepath.Base(f), data); err != nil {
			return nil, err
		}
		cfg.Files = append(cfg.Files, f)
	}
	return cfg, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- rls_config is operator configuration, trusted (SECURITY.md)
	if err != nil {
		return nil, fmt.Errorf("rls config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("rls config %s: %w", path, err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("rls config %s: larger than %d bytes", path, maxConfigBytes)
	}
	return data, nil
}

// Parse loads one file's contents (name is for errors only).
func Parse(name string, data []byte) (*Config, error) {
	cfg := &Config{domains: map[string]*node{}}
	if err := cfg.add(name, data); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) add(name string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var root yamlRoot
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("rls config %s: empty file", name)
		}
		return fmt.Errorf("rls config %s: %w", name, err)
	}
	var extra yamlRoot
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("rls config %s: one YAML document per file (one domain per file)", name)
	}
	if root.Domain == "" {
		return fmt.Errorf("rls config %s: domain is empty", name)
	}
	if _, dup := c.domains[root.Domain]; dup {
		return fmt.Errorf("rls config %s: duplicate domain %q (each domain in one file)", name, root.Domain)
	}
	n := &node{}
	if err := c.load(name, n, root.Domain, root.Descriptors, 1); err != nil {
		return err
	}
	c.domains[root.Domain] = n
	return nil
}

// load builds the children of n from ds; parent is the path so far
// ("domain" or "domain.key_value").
func (c *Config) load(file string, n *node, parent string, ds []yamlDescriptor, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("rls config %s: %s: descriptors nested deeper than %d", file, parent, maxDepth)
	}
	for _, d := range ds {
		if d.Key == "" {
			return fmt.Errorf("rls config %s: %s: descriptor has an empty key", file, parent)
		}
		k := d.Key
		if d.Value != "" {
			k += "_" + d.Value
		}
		path := parent + "." + k
		if _, dup := n.children[k]; dup {
			return fmt.Errorf("rls config %s: duplicate descriptor %q", file, path)
		}
		if d.QuotaMode {
			return fmt.Errorf("rls config %s: %s: quota_mode is not supported by Bulwark (remove it, or keep this domain on envoy/ratelimit)", file, path)
		}
		wild := strings.Contains(k, "*")
		if d.ShareThreshold && !wild {
			return fmt.Errorf("rls config %s: %s: share_threshold needs a wildcard value (containing '*')", file, path)
		}
		child := &node{}
		if d.RateLimit != nil {
			r, err := newRule(path, d.RateLimit, d.ShadowMode)
			if err != nil {
				return fmt.Errorf("rls config %s: %s: %w", file, path, err)
			}
			child.rule = r
			c.Rules++
		}
		if err := c.load(file, child, path, d.Descriptors, depth+1); err != nil {
			return err
		}
		if n.children == nil {
			n.children = map[string]*node{}
		}
		n.children[k] = child
		if wild {
			n.wildcards = append(n.wildcards, wildcard{key: k, parts: strings.Split(k, "*"), share: d.ShareThreshold})
		}
	}
	return nil
}

// units are envoy/ratelimit's units (the proto enum's names, any case) and
// their lengths, as envoy/ratelimit divides time (a month is 30 days).
var units = map[string]time.Duration{
	"SECOND": time.Second,
	"MINUTE": time.Minute,
	"HOUR":   time.Hour,
	"DAY":    24 * time.Hour,
	"WEEK":   7 * 24 * time.Hour,
	"MONTH":  30 * 24 * time.Hour,
	"YEAR":   365 * 24 * time.Hour,
}

// unitPeriod is the length of one unit of the proto enum (0 for UNKNOWN).
func unitPeriod(u rlsv3.RateLimitResponse_RateLimit_Unit) time.Duration {
	return units[u.String()]
}

func newRule(id string, y *yamlRateLimit, shadow bool) (*rule, error) {
	r := &rule{id: id, name: y.Name, unlimited: y.Unlimited, shadow: shadow, perUnit: y.RequestsPerUnit}
	unit := strings.ToUpper(y.Unit)
	period, known := units[unit]
	switch {
	case y.Unlimited && y.Unit != "":
		return nil, fmt.Errorf("rate_limit is unlimited and names a unit %q: drop one", y.Unit)
	case !y.Unlimited && !known:
		return nil, fmt.Errorf("unknown rate limit unit %q (one of second, minute, hour, day, week, month, year)", y.Unit)
	}
	if !y.Unlimited {
		r.unit = rlsv3.RateLimitResponse_RateLimit_Unit(rlsv3.RateLimitResponse_RateLimit_Unit_value[unit])
		r.period = period
		r.limit = &rlsv3.RateLimitResponse_RateLimit{Name: y.Name, RequestsPerUnit: y.RequestsPerUnit, Unit: r.unit}
	}
	for _, rp := range y.Replaces {
		switch {
		case rp.Name == "":
			return nil, errors.New("replaces has an empty name")
		case rp.Name == y.Name:
			return nil, fmt.Errorf("replaces names its own rate_limit %q", rp.Name)
		}
		r.replaces = append(r.replaces, rp.Name)
	}
	return r, nil
}

// Domains lists the configured domains, sorted.
func (c *Config) Domains() []string {
	ds := make([]string, 0, len(c.domains))
	for d := range c.domains {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds
}

// wildcardMatch reports whether s matches the pattern split on '*' (each '*'
// any run of bytes, possibly empty).
func wildcardMatch(parts []string, s string) bool {
	if len(parts) == 1 {
		return parts[0] == s
	}
	first, last := parts[0], parts[len(parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	rest := s[len(first) : len(s)-len(last)]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return true
}
