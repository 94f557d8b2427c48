package policy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// EnvoyPluginName is OPA-Envoy's gRPC server plugin. Bulwark serves
// ext_authz itself, so an OPA-Envoy configuration's block for it is
// accepted (the file works unchanged) and ignored, with a warning.
const EnvoyPluginName = "envoy_ext_authz_grpc"

// OPAOptions is what the OPA plugin manager takes from Bulwark.
type OPAOptions struct {
	// ID names this instance to OPA's services (decision log and status
	// labels.id). Empty: a random one, as OPA does.
	ID string
	// Version is reported as labels.version.
	Version string
	// Logger receives the plugins' logs (nil: discarded).
	Logger *slog.Logger
	// Registerer receives the status plugin's Prometheus metrics when the
	// configuration asks for them (status.prometheus: true).
	Registerer prometheus.Registerer
}

// OPA runs OPA's own plugin manager from an OPA configuration file:
// bundles (HTTP(S) with ETag and long polling, OCI registries, signature
// verification), decision logs (masking and drop rules, upload, console),
// status and discovery. Bulwark does not re-implement them: it reads the
// bundles the manager activated into its store and compiles them into its
// Engine through the same never-install-a-broken-policy path as a local
// directory, and sends every decision to the decision log plugin.
type OPA struct {
	manager *plugins.Manager
	logger  *slog.Logger
	source  string
	// servesPolicy: the configuration names bundles or discovery, so the
	// policy in force comes from the manager (else from Bulwark's own source).
	servesPolicy bool
	decisionLogs bool
	// started is set once Start ran: OPA's plugins can only be stopped
	// after they were started (a decision log plugin never started would
	// wait forever for its loop to acknowledge Stop).
	started atomic.Bool
}

// envRef is OPA's ${VAR} substitution in configuration files.
var envRef = regexp.MustCompile(`\$\{[^}]+\}`)

// LoadOPAConfig reads an OPA configuration file (YAML or JSON) and
// substitutes ${VAR} references from the environment as OPA does (an unset
// variable is left as written).
func LoadOPAConfig(path string) ([]byte, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- --opa-config is operator configuration
	if err != nil {
		return nil, fmt.Errorf("opa config: %w", err)
	}
	return envRef.ReplaceAllFunc(raw, func(ref []byte) []byte {
		if v, ok := os.LookupEnv(string(ref[2 : len(ref)-1])); ok {
			return []byte(v)
		}
		return ref
	}), nil
}

// NewOPA parses raw (an OPA configuration, YAML or JSON) and builds the
// plugin manager and its plugins as OPA's runtime does (discovery builds
// bundle, decision log and status plugins from the boot configuration).
// Nothing is downloaded until Start. source names the file in status.
func NewOPA(ctx context.Context, raw []byte, source string, o OPAOptions) (*OPA, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id := o.ID
	if id == "" {
		id = randomID()
	}
	opts := []func(*plugins.Manager){
		plugins.Logger(opaLogger(logger.With("component", "opa"))),
		plugins.ConsoleLogger(logging.New()), // decision_logs.console: JSON lines on stderr, as OPA
		plugins.WithEnableVersionCheck(false),
	}
	if o.Registerer != nil {
		opts = append(opts, plugins.WithPrometheusRegister(o.Registerer))
	}
	if o.Version != "" {
		opts = append(opts, plugins.Info(ast.NewTerm(ast.NewObject(
			ast.Item(ast.StringTerm("version"), ast.StringTerm(o.Version))))))
	}
	m, err := plugins.New(raw, id, inmem.New(), opts...)
	if err != nil {
		return nil, fmt.Errorf("opa config %s: %w", source, err)
	}
	for _, w := range m.Config.Warnings {
		logger.Warn("opa config", "source", source, "warning", w)
	}
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("opa config %s: init: %w", source, err)
	}
	factories := map[string]plugins.Factory{EnvoyPluginName: ignoredPlugin{logger: logger}}
	disco, err := discovery.New(m, discovery.Factories(factories), discovery.BootConfig(bootConfig(raw)))
	if err != nil {
		return nil, fmt.Errorf("opa config %s: %w", source, err)
	}
	m.Register(discovery.Name, disco)
	return &OPA{
		manager:      m,
		logger:       logger,
		source:       source,
		servesPolicy: len(m.Config.Bundles) > 0 || len(m.Config.Bundle) > 0 || len(m.Config.Discovery) > 0,
		decisionLogs: len(m.Config.DecisionLogs) > 0 || len(m.Config.Discovery) > 0,
	}, nil
}

// bootConfig is the file as a map (YAML or JSON, as OPA reads it), which
// discovery uses to warn when a discovered configuration overrides it.
func bootConfig(raw []byte) map[string]any {
	var m map[string]any
	if err := util.Unmarshal(raw, &m); err != nil {
		return nil // plugins.New already refused a file that does not parse
	}
	return m
}

// ServesPolicy reports whether the configuration names bundles (or
// discovery, which may): the policy in force then comes from the manager.
func (o *OPA) ServesPolicy() bool { return o != nil && o.servesPolicy }

// Source names the configuration file, for status and audit.
func (o *OPA) Source() string { return "opa:" + o.source }

// Start starts the plugins: downloads begin, decision logs and status are
// uploaded on their schedules. It returns once they are started, not once
// a bundle is active: readiness says when it is.
func (o *OPA) Start(ctx context.Context) error {
	o.started.Store(true)
	if err := o.manager.Start(ctx); err != nil {
		return fmt.Errorf("opa plugins: %w", err)
	}
	return nil
}

// Stop stops the plugins, flushing buffered decision logs and a last
// status report within ctx's deadline. Before Start there is nothing to
// stop and it returns at once.
func (o *OPA) Stop(ctx context.Context) {
	if o != nil && o.started.Load() {
		o.manager.Stop(ctx)
	}
}

// PluginStatus is the state of each plugin (bundle, decision_logs,
// status, discovery), for readiness.
func (o *OPA) PluginStatus() map[string]string {
	out := map[string]string{}
	for name, s := range o.manager.PluginStatus() {
		if s != nil {
			out[name] = string(s.State)
		}
	}
	return out
}

// onCompile calls f after every activation that changed policies or data.
// OPA calls its triggers inside the store's commit, so f must not block
// on the store: the engine only queues a reload.
func (o *OPA) onCompile(f func()) {
	o.manager.RegisterCompilerTrigger(func(storage.Transaction) { f() })
}

// onBundleStatus calls f with every bundle status update (download,
// verification or activation, success or failure). The bundle plugin may
// appear only once discovery configured it, so registration is retried
// on plugin status changes.
func (o *OPA) onBundleStatus(f func(bundle.Status)) {
	registered := false
	try := func() {
		if registered {
			return
		}
		if bp := bundle.Lookup(o.manager); bp != nil {
			registered = true
			bp.Register("bulwark", f)
		}
	}
	try()
	o.manager.RegisterPluginStatusListener("bulwark", func(map[string]*plugins.Status) { try() })
}

// snapshot reads the policies and data the manager activated, with the
// compiler the bundle plugin built for them, as one consistent view.
func (o *OPA) snapshot(ctx context.Context) (*snapshot, error) {
	store := o.manager.Store
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("opa store: %w", err)
	}
	defer store.Abort(ctx, txn)
	compiler := o.manager.GetCompiler()
	ids, err := store.ListPolicies(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("opa store: %w", err)
	}
	if len(ids) == 0 || compiler == nil {
		return nil, errors.New("no bundle activated yet")
	}
	sort.Strings(ids)
	h := sha256.New()
	for _, id := range ids {
		b, err := store.GetPolicy(ctx, txn, id)
		if err != nil {
			return nil, fmt.Errorf("opa store: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", id, len(b))
		h.Write(b)
	}
	v, err := store.Read(ctx, txn, storage.RootPath)
	if err != nil {
		return nil, fmt.Errorf("opa store: %w", err)
	}
	data, _ := v.(map[string]any)
	hashed := make(map[string]any, len(data))
	for k, v := range data {
		if k != "system" { // bundle manifests and ETags: not the policy
			hashed[k] = v
		}
	}
	dj, err := json.Marshal(hashed) // map keys sorted: a stable hash
	if err != nil {
		return nil, fmt.Errorf("opa store data: %w", err)
	}
	h.Write(dj)
	// The data is copied into the Engine's own store by compile, so an
	// activation that is later refused cannot change what the policy in
	// force reads.
	data, err = deepCopy(data)
	if err != nil {
		return nil, err
	}
	return &snapshot{compiler: compiler, data: data, revision: hex.EncodeToString(h.Sum(nil))[:16],
		bundles: o.bundleRevisions()}, nil
}

func deepCopy(data map[string]any) (map[string]any, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("opa store data: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("opa store data: %w", err)
	}
	return out, nil
}

// bundleRevisions is each bundle's manifest revision, as OPA's decision
// logs name them.
func (o *OPA) bundleRevisions() map[string]string {
	bp := bundle.Lookup(o.manager)
	if bp == nil {
		return nil
	}
	out := map[string]string{}
	for name := range bp.Config().Bundles {
		out[name] = ""
	}
	ctx := context.Background()
	_ = storage.Txn(ctx, o.manager.Store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		for name := range out {
			if rev, err := bundleRevision(ctx, o.manager.Store, txn, name); err == nil {
				out[name] = rev
			}
		}
		return nil
	})
	return out
}

func bundleRevision(ctx context.Context, store storage.Store, txn storage.Transaction, name string) (string, error) {
	v, err := store.Read(ctx, txn, storage.Path{"system", "bundles", name, "manifest", "revision"})
	if err != nil {
		return "", err
	}
	s, _ := v.(string)
	return s, nil
}

// DecisionEvent is one Bulwark decision as OPA's decision log records it.
type DecisionEvent struct {
	DecisionID string
	// Path is the decision's path ("bulwark/decision").
	Path string
	// Input is the policy input as evaluated; Result the policy's answer
	// (nil when it had none).
	Input, Result ast.Value
	// Bundles are the revisions of the bundles that decided.
	Bundles map[string]string
	// Err is the evaluation's failure, if any.
	Err error
	// Timestamp is when the decision started.
	Timestamp time.Time
	// Custom is Bulwark's own view of the decision (the final verdict after
	// rate limits and dry-run, the reason, the phase), as event.custom.
	Custom map[string]any
}

// DecisionLogs reports whether decision logs are configured.
func (o *OPA) DecisionLogs() bool { return o != nil && o.decisionLogs }

// LogDecision hands one decision to OPA's decision log plugin, which masks,
// drops, buffers and uploads it (or prints it to the console) as its
// configuration says. It does nothing when no decision log is configured.
// A failure is logged, never returned: the decision stands either way, and
// Bulwark's own audit log records it regardless.
func (o *OPA) LogDecision(ctx context.Context, ev DecisionEvent) {
	if !o.DecisionLogs() {
		return
	}
	p := logs.Lookup(o.manager)
	if p == nil {
		return
	}
	info := &server.Info{
		DecisionID: ev.DecisionID,
		Path:       ev.Path,
		Timestamp:  ev.Timestamp.UTC(),
		InputAST:   ev.Input,
		Error:      ev.Err,
		Custom:     ev.Custom,
	}
	if ev.Input != nil {
		in, err := ast.JSON(ev.Input)
		if err == nil {
			info.Input = &in
		}
	}
	if ev.Result != nil {
		res, err := ast.JSON(ev.Result)
		if err == nil {
			info.Results = &res
		}
	}
	if len(ev.Bundles) > 0 {
		info.Bundles = make(map[string]server.BundleInfo, len(ev.Bundles))
		for name, rev := range ev.Bundles {
			info.Bundles[name] = server.BundleInfo{Revision: rev}
		}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		info.TraceID, info.SpanID = sc.TraceID().String(), sc.SpanID().String()
	}
	if err := p.Log(context.WithoutCancel(ctx), info); err != nil {
		o.logger.Warn("opa decision log failed", "decision_id", ev.DecisionID, "error", err)
	}
}

// ignoredPlugin accepts a plugin block Bulwark replaces (OPA-Envoy's gRPC
// server) so the file works unchanged, and warns once that it is ignored.
type ignoredPlugin struct{ logger *slog.Logger }

func (f ignoredPlugin) Validate(_ *plugins.Manager, config []byte) (any, error) {
	var c struct {
		Addr string `json:"addr"`
		Path string `json:"path"`
	}
	_ = json.Unmarshal(config, &c) // any shape is accepted: the block is ignored
	f.logger.Warn("opa config: plugins."+EnvoyPluginName+" is ignored: Bulwark serves ext_authz on its own gRPC port (--grpc-addr) and decides with --policy-query",
		"addr", c.Addr, "path", c.Path)
	return c, nil
}

func (f ignoredPlugin) New(m *plugins.Manager, _ any) plugins.Plugin {
	return &idlePlugin{m: m}
}

type idlePlugin struct{ m *plugins.Manager }

func (p *idlePlugin) Start(context.Context) error {
	p.m.UpdatePluginStatus(EnvoyPluginName, &plugins.Status{State: plugins.StateOK})
	return nil
}
func (p *idlePlugin) Stop(context.Context)             {}
func (p *idlePlugin) Reconfigure(context.Context, any) {}

// opaLogger is OPA's logging.Logger over Bulwark's slog logger, at the
// level that logger has enabled.
func opaLogger(l *slog.Logger) logging.Logger {
	level := logging.Error
	switch ctx := context.Background(); {
	case l.Enabled(ctx, slog.LevelDebug):
		level = logging.Debug
	case l.Enabled(ctx, slog.LevelInfo):
		level = logging.Info
	case l.Enabled(ctx, slog.LevelWarn):
		level = logging.Warn
	}
	return logging.NewLoggerFromSlogHandler(l.Handler(), level)
}

// randomID names an instance as OPA does when given no id.
func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// kick queues a reload after an OPA activation (called inside the store's
// commit, so it never blocks: one pending signal is enough).
func (e *Engine) kick() {
	select {
	case e.activated <- struct{}{}:
	default:
	}
}

// watchOPA compiles every activation the OPA bundle plugin made, until ctx
// is done. A compile that fails keeps the last good policy (Reload).
func (e *Engine) watchOPA(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.activated:
			_ = e.Reload(ctx) // failures are logged, counted and kept in Status
		}
	}
}

// bundleStatus records what the bundle plugin reported for one bundle: a
// failure (server unreachable, bad signature, corrupt bundle, activation
// refused) is counted, kept in Status for /readyz, and told to OnLoad once
// per distinct error; a success clears it.
func (e *Engine) bundleStatus(st bundle.Status) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st.Code == "" && st.Message == "" && len(st.Errors) == 0 {
		if _, ok := e.bundleErrs[st.Name]; ok {
			delete(e.bundleErrs, st.Name)
			e.logger.Info("OPA bundle healthy again", "bundle", st.Name, "revision", st.ActiveRevision)
		}
		if len(e.bundleErrs) == 0 && e.lastErr == "" && e.cur.Load() != nil {
			e.loaded.Set(1)
		}
		return
	}
	msg := bundleMessage(st)
	e.bundleFailures.WithLabelValues(st.Name).Inc()
	e.reloads.WithLabelValues("failure").Inc()
	e.loaded.Set(0)
	prev, seen := e.bundleErrs[st.Name]
	e.bundleErrs[st.Name] = bundleErr{msg: msg, at: time.Now()}
	if seen && prev.msg == msg {
		return // the same failure again (every poll of an unreachable server)
	}
	old := ""
	if cur := e.cur.Load(); cur != nil {
		old = cur.revision
	}
	e.logger.Error("OPA bundle failed; keeping the last good policy", "bundle", st.Name, "revision", old, "error", msg)
	if e.cfg.OnLoad != nil {
		e.cfg.OnLoad(old, "", fmt.Errorf("bundle %s: %s", st.Name, msg))
	}
}

// bundleMessage is a bundle status's error as one line: the code, the
// message and the detailed errors (a signature mismatch is in Errors).
func bundleMessage(st bundle.Status) string {
	msg := st.Message
	if st.Code != "" {
		msg = st.Code + ": " + msg
	}
	for _, err := range st.Errors {
		if err != nil {
			msg += "; " + err.Error()
		}
	}
	if st.HTTPCode != "" {
		msg += " (http " + string(st.HTTPCode) + ")"
	}
	return msg
}

// DecisionLog sends decisions of the query it was made for to OPA's
// decision log plugin, naming them by the query's path as OPA-Envoy does
// ("envoy/authz/allow", "bulwark/decision").
type DecisionLog struct {
	opa  *OPA
	path string
}

// NewDecisionLog is the decision log of o for decisions of query (as
// Config.Query); nil when o configures no decision log.
func NewDecisionLog(o *OPA, query string) (*DecisionLog, error) {
	if !o.DecisionLogs() {
		return nil, nil
	}
	q, err := DataQuery(query)
	if err != nil {
		return nil, err
	}
	path := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(q, "data"), "."), ".", "/")
	return &DecisionLog{opa: o, path: path}, nil
}

// LogDecision logs ev under the log's path (see OPA.LogDecision).
func (d *DecisionLog) LogDecision(ctx context.Context, ev DecisionEvent) {
	ev.Path = d.path
	d.opa.LogDecision(ctx, ev)
}
