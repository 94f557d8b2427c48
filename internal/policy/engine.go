package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/usage"
)

// Config says where policies come from and which rule decides.
type Config struct {
	// Dir loads .rego and data (.json/.yaml) files from a directory, watched
	// for changes. Empty means the embedded defaults (Embedded).
	Dir string
	// Bundle loads an OPA bundle tarball (.tar.gz) instead of Dir.
	Bundle string
	// Embedded is the policy tree compiled into the binary, used when neither
	// Dir nor Bundle is set.
	Embedded fs.FS
	// Query is the decision's path, "bulwark/decision" or "data.bulwark.decision".
	Query string
	// RegoV0 parses modules with pre-1.0 Rego syntax (`allow { ... }`).
	RegoV0 bool
	// OnLoad, when set, is told of every load that changed something or
	// failed: the previous and new revisions and the error (nil on success).
	// The audit trail records policy changes through it.
	OnLoad func(oldRevision, newRevision string, err error)
	// OPA, when its configuration names bundles (OPA.ServesPolicy), is the
	// policy source instead of Dir, Bundle and Embedded: every bundle it
	// activates is compiled here and swapped in only if that succeeds, and
	// every download, verification or activation failure is reported in
	// Status and the metrics while the last good policy stays in force.
	OPA *OPA
}

// DataQuery turns "bulwark/decision" or "data.bulwark.decision" into the
// Rego query "data.bulwark.decision".
func DataQuery(q string) (string, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return "", errors.New("empty policy query")
	}
	if !strings.HasPrefix(q, "data.") && q != "data" {
		q = "data." + strings.ReplaceAll(strings.Trim(q, "/"), "/", ".")
	}
	if _, err := ast.ParseRef(q); err != nil {
		return "", fmt.Errorf("policy query %q is not a valid reference: %w", q, err)
	}
	return q, nil
}

// Status describes the policy currently in force, for /readyz and the admin API.
type Status struct {
	Ready       bool      `json:"ready"`
	Revision    string    `json:"revision,omitempty"`
	LoadedAt    time.Time `json:"loaded_at,omitzero"`
	Source      string    `json:"source"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Bundles are the revisions (from their manifests) of the OPA bundles
	// the policy in force came from (with --opa-config only).
	Bundles map[string]string `json:"bundles,omitempty"`
}

// Result is a decoded decision plus the revision of the policy that made it,
// so audit records can name exactly what decided.
type Result struct {
	Decision Decision
	Revision string
	// Value is the policy's answer as it returned it, for OPA's decision
	// log (nil when there was none).
	Value ast.Value
	// Bundles are the OPA bundle revisions of the policy that decided (nil
	// without --opa-config bundles).
	Bundles map[string]string
}

type compiled struct {
	pq       rego.PreparedEvalQuery
	revision string
	loadedAt time.Time
	greyZone *detect.GreyZone     // from data, see GreyZonePath
	content  *detect.ContentRules // from data, see ContentSafetyPath
	usage    *usage.Config        // from data, see usage.ConfigPath
	bundles  map[string]string
	docs     dataDocs // the store's data, read once (see dataDocs)
	// toolLists is data.bulwark.tools compiled (see ToolLists).
	toolLists *ToolLists
}

// Engine evaluates the decision query. It is safe for concurrent use: Evaluate
// reads the current compiled query with one atomic load, and Reload swaps a
// fully compiled replacement in only after it compiled.
type Engine struct {
	cfg    Config
	query  string
	logger *slog.Logger
	// unparsed is set for Bulwark's own policy package (a query under
	// data.bulwark), which is written to see inputs whose path or body
	// could not be parsed (input.parse_errors) and decide on them.
	unparsed bool

	cur     atomic.Pointer[compiled]
	mu      sync.Mutex // serialises reloads and guards lastErr
	lastErr string
	lastAt  time.Time

	reloads *prometheus.CounterVec
	loaded  prometheus.Gauge

	// With an OPA source: failures the bundle plugin reported, by bundle
	// (guarded by mu), the counter of them, and the signal that an
	// activation is waiting to be compiled (see opaEvents).
	bundleErrs     map[string]bundleErr
	bundleFailures *prometheus.CounterVec
	activated      chan struct{}
}

type bundleErr struct {
	msg string
	at  time.Time
}

// New loads and compiles the policies once. It fails if that first load fails:
// a server with no policy would have to deny everything, so it should not start.
func New(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	q, err := DataQuery(cfg.Query)
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" && cfg.Bundle == "" && cfg.Embedded == nil && !cfg.OPA.ServesPolicy() {
		return nil, errors.New("policy: no source: set Dir, Bundle or Embedded")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:      cfg,
		query:    q,
		logger:   logger,
		unparsed: SeesUnparsedInput(q),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_policy_reloads_total",
			Help: "Policy loads by result (success, failure, unchanged).",
		}, []string{"result"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_policy_last_load_success",
			Help: "1 if the most recent policy load succeeded, 0 if it failed (the last good policy stays in force).",
		}),
	}
	collectors := []prometheus.Collector{e.reloads, e.loaded}
	if cfg.OPA.ServesPolicy() {
		e.bundleErrs = map[string]bundleErr{}
		e.activated = make(chan struct{}, 1)
		e.bundleFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_policy_bundle_failures_total",
			Help: "OPA bundle downloads, verifications or activations that failed, by bundle (the last good policy stays in force).",
		}, []string{"bundle"})
		collectors = append(collectors, e.bundleFailures)
	}
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("policy: register metrics: %w", err)
			}
		}
	}
	if cfg.OPA.ServesPolicy() {
		// No bundle is downloaded before OPA.Start: the engine starts with
		// no policy (every decision denies with policy_not_loaded, and
		// /readyz says so) until the first activation compiles.
		e.lastErr, e.lastAt = "waiting for the first OPA bundle activation", time.Now()
		cfg.OPA.onCompile(e.kick)
		cfg.OPA.onBundleStatus(e.bundleStatus)
		return e, nil
	}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Source names where policies come from, for logs, status and audit.
func (c Config) Source() string {
	switch {
	case c.OPA.ServesPolicy():
		return c.OPA.Source()
	case c.Bundle != "":
		return "bundle:" + c.Bundle
	case c.Dir != "":
		return "dir:" + c.Dir
	default:
		return "embedded"
	}
}

// Source names where the engine's policies come from.
func (e *Engine) Source() string { return e.cfg.Source() }

// Reload reads the source again, compiles it and, only if that succeeds, makes
// it the policy in force. An unchanged source (same revision) is a no-op.
func (e *Engine) Reload(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	snap, err := e.read(ctx)
	if err == nil {
		if cur := e.cur.Load(); cur != nil && cur.revision == snap.revision {
			e.reloads.WithLabelValues("unchanged").Inc()
			if e.lastErr == "" && len(e.bundleErrs) == 0 {
				e.loaded.Set(1)
			}
			return nil
		}
		var c *compiled
		c, err = e.compile(ctx, snap)
		if err == nil {
			old := e.cur.Swap(c)
			e.lastErr, e.lastAt = "", time.Time{}
			e.reloads.WithLabelValues("success").Inc()
			if len(e.bundleErrs) == 0 {
				e.loaded.Set(1)
			}
			oldRev := ""
			if old != nil {
				oldRev = old.revision
			}
			e.logger.Info("policy loaded", "source", e.Source(), "revision", c.revision, "previous_revision", oldRev, "query", e.query)
			if e.cfg.OnLoad != nil {
				e.cfg.OnLoad(oldRev, c.revision, nil)
			}
			return nil
		}
	}
	e.lastErr, e.lastAt = err.Error(), time.Now()
	e.reloads.WithLabelValues("failure").Inc()
	e.loaded.Set(0)
	cur := e.cur.Load()
	if cur != nil {
		e.logger.Error("policy reload failed; keeping the last good policy", "source", e.Source(), "revision", cur.revision, "error", err)
	}
	if e.cfg.OnLoad != nil {
		old := ""
		if cur != nil {
			old = cur.revision
		}
		e.cfg.OnLoad(old, "", err)
	}
	return err
}

// Status reports the policy in force and the last load error, if any.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{Source: e.Source(), LastError: e.lastErr, LastErrorAt: e.lastAt}
	if s.LastError == "" && len(e.bundleErrs) > 0 {
		names := make([]string, 0, len(e.bundleErrs))
		for n := range e.bundleErrs {
			names = append(names, n)
		}
		sort.Strings(names)
		be := e.bundleErrs[names[0]]
		s.LastError, s.LastErrorAt = "bundle "+names[0]+": "+be.msg, be.at
	}
	if c := e.cur.Load(); c != nil {
		s.Ready, s.Revision, s.LoadedAt, s.Bundles = true, c.revision, c.loadedAt, c.bundles
	}
	return s
}

// Revision is the content hash of the policy in force ("" before the first load).
func (e *Engine) Revision() string {
	if c := e.cur.Load(); c != nil {
		return c.revision
	}
	return ""
}

// SeesUnparsedInput reports whether the decision query q (as DataQuery
// returns it) belongs to Bulwark's own policy package, data.bulwark. Such a
// policy opts into evaluating inputs whose path or body could not be parsed
// (it reads input.parse_errors and denies with its own reason); any other
// policy is assumed to be written for OPA-Envoy, which cannot build such an
// input and denies, so Evaluate denies without running it.
func SeesUnparsedInput(q string) bool {
	return q == "data.bulwark" || strings.HasPrefix(q, "data.bulwark.")
}

// Evaluate runs the decision query on input. ctx's deadline bounds the
// evaluation: when it expires OPA is cancelled and the error has CodeTimeout
// (and unwraps to the context error). Every failure is an *Error whose Code
// the caller turns into a deny reason. An input that records a path or body
// it could not parse (parse_errors.path, .body or .llm) fails with
// CodeInputNotParsed unless the policy opted in (SeesUnparsedInput): a
// policy written for OPA-Envoy must never be more permissive under Bulwark
// than under OPA-Envoy, which denies when it cannot build the input.
func (e *Engine) Evaluate(ctx context.Context, input ast.Value) (Result, error) {
	c := e.cur.Load()
	if c == nil {
		return Result{}, &Error{Code: CodeNotLoaded, Detail: "no policy loaded"}
	}
	if !e.unparsed && Unparsed(input) {
		return Result{Revision: c.revision}, &Error{Code: CodeInputNotParsed, Detail: "the request's path or body could not be parsed"}
	}
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancel.Cancel)
	rules := getRuleCache()
	rs, err := c.pq.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalExternalCancel(cancel),
		rego.EvalGenerateJSON(keepTerm),
		rego.EvalMetrics(noMetrics), // OPA's per-eval timers cost allocations nobody reads
		rego.EvalBaseCache(c.docs),
		rego.EvalVirtualCache(rules),
	)
	putRuleCache(rules)
	stop()
	res := Result{Revision: c.revision, Bundles: c.bundles}
	if cerr := ctx.Err(); cerr != nil {
		return res, &Error{Code: CodeTimeout, Detail: "policy evaluation did not finish in time", Err: cerr}
	}
	if err != nil {
		return res, &Error{Code: CodeEvalError, Detail: "policy evaluation failed", Err: err}
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return res, &Error{Code: CodeUndefined, Detail: e.query + " is undefined for this input"}
	}
	if len(rs) > 1 {
		return res, &Error{Code: CodeInvalidDecision, Detail: e.query + " produced more than one result"}
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return res, &Error{Code: CodeInvalidDecision, Detail: fmt.Sprintf("unexpected result type %T", rs[0].Expressions[0].Value)}
	}
	res.Value = t.Value
	res.Decision, err = DecodeDecision(t.Value)
	return res, err
}

var noMetrics = metrics.NoOp()

// keepTerm hands results back as *ast.Term, skipping OPA's conversion to Go
// maps; DecodeDecision reads the AST directly.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

type snapshot struct {
	modules  map[string]*ast.Module
	data     map[string]any
	revision string
	// compiler, set for an OPA bundle, holds the modules the bundle
	// plugin already parsed and compiled (modules is then empty).
	compiler *ast.Compiler
	bundles  map[string]string
}

func (e *Engine) regoVersion() ast.RegoVersion {
	if e.cfg.RegoV0 {
		return ast.RegoV0
	}
	return ast.RegoV1
}

func (e *Engine) read(ctx context.Context) (*snapshot, error) {
	if e.cfg.OPA.ServesPolicy() {
		return e.cfg.OPA.snapshot(ctx)
	}
	if e.cfg.Bundle != "" {
		return e.readBundle()
	}
	fsys := e.cfg.Embedded
	if e.cfg.Dir != "" {
		st, err := os.Stat(e.cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("policy dir: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("policy dir %s is not a directory", e.cfg.Dir)
		}
		fsys = os.DirFS(e.cfg.Dir)
	}
	return readFS(fsys, e.regoVersion())
}

// policyFile reports whether a path takes part in serving: Rego modules other
// than tests, and data files. Hidden entries are skipped, which also skips the
// "..data" and timestamped directories a Kubernetes ConfigMap mount adds.
func policyFile(p string, isDir bool) bool {
	base := path.Base(p)
	if p != "." && strings.HasPrefix(base, ".") {
		return false
	}
	if isDir {
		return true
	}
	switch path.Ext(base) {
	case ".rego":
		return !strings.HasSuffix(base, "_test.rego")
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// strictYAML refuses a YAML data file that defines a key twice in one
// mapping. OPA's loader keeps the last value silently, so a second
// "routes:" or a repeated role under "tools:" would quietly replace what an
// operator wrote above it; a policy directory with such a file is not
// installed (the reload keeps the running policy).
func strictYAML(name string, b []byte) error {
	switch path.Ext(name) {
	case ".yaml", ".yml":
	default:
		return nil
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("policy data %s: %w", name, err)
	}
	return nil
}

func readFS(fsys fs.FS, v ast.RegoVersion) (*snapshot, error) {
	h := sha256.New()
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !policyFile(p, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list policy files: %w", err)
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
		if err := strictYAML(f, b); err != nil {
			return nil, err
		}
	}
	if len(files) == 0 {
		return nil, errors.New("no policy files found")
	}
	res, err := loader.NewFileLoader().
		WithFS(fsys).
		WithRegoVersion(v).
		Filtered([]string{"."}, func(abspath string, info fs.FileInfo, _ int) bool {
			return !policyFile(abspath, info.IsDir())
		})
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	return &snapshot{
		modules:  res.ParsedModules(),
		data:     res.Documents,
		revision: hex.EncodeToString(h.Sum(nil))[:16],
	}, nil
}

func (e *Engine) readBundle() (*snapshot, error) {
	b, err := loader.NewFileLoader().WithRegoVersion(e.regoVersion()).AsBundle(e.cfg.Bundle)
	if err != nil {
		return nil, fmt.Errorf("load bundle: %w", err)
	}
	raw, err := os.ReadFile(e.cfg.Bundle)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	sum := sha256.Sum256(raw)
	mods := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		mods[m.Path] = m.Parsed
	}
	return &snapshot{modules: mods, data: b.Data, revision: hex.EncodeToString(sum[:])[:16]}, nil
}

func (e *Engine) compile(ctx context.Context, s *snapshot) (*compiled, error) {
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, fmt.Errorf("policy store: %w", err)
	}
	data := s.data
	if data == nil {
		data = map[string]any{}
	}
	gz, err := greyZoneFromData(data)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("policy data: %w", err)
	}
	content, err := contentRulesFromData(data)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("policy data: %w", err)
	}
	uc, err := usage.ParseConfig(data)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("policy data: %w", err)
	}
	if err := store.Write(ctx, txn, storage.AddOp, storage.RootPath, data); err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("policy data: %w", err)
	}
	if err := store.Commit(ctx, txn); err != nil {
		return nil, fmt.Errorf("policy data: %w", err)
	}
	opts := []func(*rego.Rego){
		rego.Query(e.query),
		rego.Store(store),
		rego.SetRegoVersion(e.regoVersion()),
	}
	if s.compiler != nil {
		opts = append(opts, rego.Compiler(s.compiler))
	}
	names := make([]string, 0, len(s.modules))
	for name := range s.modules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		opts = append(opts, rego.ParsedModule(s.modules[name]))
	}
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	docs, err := newDataDocs(ctx, store)
	if err != nil {
		return nil, err
	}
	return &compiled{pq: pq, revision: s.revision, loadedAt: time.Now(), greyZone: gz, content: content, usage: uc, bundles: s.bundles, docs: docs,
		toolLists: toolListsFromData(data)}, nil
}
