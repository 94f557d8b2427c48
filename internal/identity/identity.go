// Package identity turns the credentials on a request into a Principal: who
// is asking, with which roles and tenant. It verifies API keys (bwk_<id>_<secret>,
// stored only as peppered HMACs in a hot-reloaded keys file and/or Redis),
// JWTs (static keys or a JWKS fetched with a timeout, cached for the lifetime
// its response publishes within bounds, refreshed then and on an unknown kid,
// rate limited; a cached verdict lasts only while its key is in the current
// set), and mTLS peers (Envoy's source principal or x-forwarded-client-cert,
// only when trusted). Key files and the Redis key store are changed only
// atomically against every other writer (UpdateKeysFile, compare-and-swap).
//
// Policy decides what a principal may do; this package only says who it is.
// An absent credential gives an anonymous principal; an invalid one gives an
// anonymous principal whose Error holds a stable reason code, so policy can
// answer 401 with a clear message. Credentials never appear in a Principal,
// in logs or in metrics.
package identity

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Kind says how a principal was authenticated; policy input carries it as
// principal.kind.
type Kind string

// The kinds of principal, as DESIGN.md names them.
const (
	KindAPIKey    Kind = "api_key"
	KindJWT       Kind = "jwt"
	KindMTLS      Kind = "mtls"
	KindAnonymous Kind = "anonymous"
)

// Reason codes put in Principal.Error when a credential was presented but
// not accepted. They are stable: policies, dashboards and clients match on
// them.
const (
	ReasonMalformed           = "malformed"             // unparsable credential or header
	ReasonOversized           = "oversized"             // credential header over MaxCredentialBytes
	ReasonUnsupportedScheme   = "unsupported_scheme"    // Authorization scheme other than Bearer
	ReasonNotConfigured       = "not_configured"        // credential kind not enabled on this server
	ReasonInvalidKey          = "invalid_key"           // no API key with this id, or its secret is wrong: one reason for both
	ReasonUnknownKey          = "unknown_key"           // no JWT key with this kid (for API keys: metrics only)
	ReasonBadSecret           = "bad_secret"            // API key id known, secret wrong (metrics only)
	ReasonRevoked             = "revoked"               // API key revoked
	ReasonDisabled            = "disabled"              // API key disabled
	ReasonExpired             = "expired"               // API key or JWT past its expiry
	ReasonNotYetValid         = "not_yet_valid"         // JWT nbf/iat in the future
	ReasonBadSignature        = "bad_signature"         // JWT signature does not verify
	ReasonUnsupportedAlg      = "unsupported_alg"       // JWT alg not allowed (none, HS*, ...)
	ReasonBadIssuer           = "bad_issuer"            // JWT iss mismatch
	ReasonBadAudience         = "bad_audience"          // JWT aud mismatch
	ReasonMissingClaim        = "missing_claim"         // JWT without exp or subject
	ReasonLifetimeTooLong     = "lifetime_too_long"     // JWT exp further after iat than MaxTokenLifetime
	ReasonJWKSUnavailable     = "jwks_unavailable"      // no JWKS could be fetched yet
	ReasonKeyStoreUnavailable = "key_store_unavailable" // Redis key lookup failed (fail closed)
)

// Principal is who is asking. It never contains the credential itself.
// Roles and Claims may be shared with a cache and must not be modified.
type Principal struct {
	// ID names the principal: the API key's principal (default its id), the
	// JWT subject, or the peer's SPIFFE ID/subject. Empty when anonymous.
	ID string
	// Kind is how the principal was authenticated.
	Kind Kind
	// Roles come from the key record, the roles claim, or MTLSPrincipals.
	Roles []string
	// Tenant comes from the key record, the tenant claim, or MTLSPrincipals.
	Tenant string
	// Claims are the verified JWT claims; {"key_id"} for API keys;
	// {"spiffe_id","trust_domain"} for SPIFFE peers.
	Claims map[string]any
	// Error is a Reason* code when a credential was presented but rejected
	// (Kind is then anonymous); empty otherwise.
	Error string
}

// Authenticated reports whether a credential was verified.
func (p Principal) Authenticated() bool { return p.Kind != "" && p.Kind != KindAnonymous }

// Request carries the raw request attributes identity looks at. Empty
// strings mean absent.
type Request struct {
	// Authorization is the Authorization header value.
	Authorization string
	// APIKey is the x-api-key header value.
	APIKey string
	// XFCC is the x-forwarded-client-cert header value.
	XFCC string
	// SourcePrincipal is Envoy's attributes.source.principal: the peer
	// certificate identity Envoy verified on the downstream connection.
	SourcePrincipal string
}

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Authenticator turns Requests into Principals. It is safe for concurrent
// use. Create it with New, call Start for background work, Close when done.
type Authenticator struct {
	cfg    Config
	clock  Clock
	logger *slog.Logger
	m      *metrics

	mac       *macer                   // nil: API keys disabled (no pepper)
	dummySum  [sha256.Size]byte        // compared against for unknown key ids, so they cost what known ones do
	fileKeys  atomic.Pointer[keySet]   // nil without KeysFile
	fileHash  atomic.Pointer[[32]byte] // content hash of the loaded file
	keysErr   atomic.Pointer[error]    // last reload error, nil when good
	redisKeys *redisLookup             // nil without Redis
	jwt       *jwtVerifier             // nil without JWT keys
	jwtCache  *jwtCache
	peers     *peerMapper

	base    context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started atomic.Bool
}

// New builds an Authenticator. rdb, when not nil and a pepper is configured,
// adds the Redis API key store (checked before the keys file, so Redis can
// revoke everywhere at once). reg and logger may be nil. New fails on an
// invalid config, an unreadable pepper, or a keys/JWT keys file that does not
// parse; a JWKS that cannot be fetched yet is not fatal (tokens get
// "jwks_unavailable" until it can).
func New(cfg Config, rdb redis.UniversalClient, reg prometheus.Registerer, logger *slog.Logger) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{
		cfg:    cfg,
		clock:  systemClock{},
		logger: logger.With("component", "identity"),
		m:      newMetrics(reg),
		peers:  newPeerMapper(cfg.MTLSPrincipals),
	}
	a.base, a.cancel = context.WithCancel(context.Background())

	if cfg.Pepper != "" || cfg.PepperFile != "" {
		pepper, err := LoadPepper(cfg.PepperFile, cfg.Pepper)
		if err != nil {
			return nil, fmt.Errorf("identity: PepperFile: %w", err)
		}
		a.mac = newMacer(pepper)
		if _, err := rand.Read(a.dummySum[:]); err != nil {
			return nil, fmt.Errorf("identity: random: %w", err)
		}
	}
	if cfg.KeysFile != "" {
		if err := a.ReloadKeys(); err != nil {
			return nil, err
		}
	}
	if rdb != nil && a.mac != nil {
		a.redisKeys = &redisLookup{
			store:    NewRedisKeyStore(rdb, cfg.RedisKeyPrefix),
			onChange: cfg.OnKeyChange,
			ttl:      cfg.RedisCacheTTL,
			tmo:      cfg.RedisTimeout,
			entries:  map[string]redisEntry{},
		}
	}
	if cfg.jwtEnabled() {
		if cfg.Issuer == "" || cfg.Audience == "" {
			a.logger.Warn("INSECURE: JWT issuer or audience not checked (jwt_insecure_skip_issuer_audience): "+
				"tokens minted for other services or by other issuers sharing the keys are accepted with their roles and tenant",
				"issuer_checked", cfg.Issuer != "", "audience_checked", cfg.Audience != "")
		}
		v, err := a.newJWTVerifier()
		if err != nil {
			return nil, err
		}
		a.jwt = v
		a.jwtCache = newJWTCache(cfg.JWTCacheSize)
	}
	return a, nil
}

func (a *Authenticator) newJWTVerifier() (*jwtVerifier, error) {
	cfg := a.cfg
	v := &jwtVerifier{
		allowed:     map[string]bool{},
		leeway:      cfg.Leeway,
		maxLifetime: cfg.MaxTokenLifetime,
		subClaim:    cfg.SubjectClaim,
		roles:       strings.Split(cfg.RolesClaim, "."),
		tenant:      strings.Split(cfg.TenantClaim, "."),
		expected:    jwtExpected(cfg),
	}
	for _, alg := range cfg.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(alg))
		v.allowed[alg] = true
	}
	if cfg.JWTKeysFile != "" {
		data, err := os.ReadFile(cfg.JWTKeysFile)
		if err != nil {
			return nil, fmt.Errorf("identity: JWTKeysFile: %w", err)
		}
		keys, err := parseStaticKeys(data)
		if err != nil {
			return nil, fmt.Errorf("identity: JWTKeysFile %s: %w", cfg.JWTKeysFile, err)
		}
		v.static = newKeyRing(keys)
	}
	if cfg.JWKSURL != "" {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = cfg.JWKSFetchTimeout
		v.jwks = &jwksSource{
			url:         cfg.JWKSURL,
			client:      &http.Client{Transport: tr, Timeout: cfg.JWKSFetchTimeout},
			timeout:     cfg.JWKSFetchTimeout,
			minInterval: cfg.JWKSMinRefreshInterval,
			ttl:         cacheTTL{def: cfg.JWKSRefreshInterval, min: cfg.JWKSMinCacheTTL, max: cfg.JWKSMaxCacheTTL},
			clock:       a.clock,
			metrics:     a.m,
			logger:      a.logger,
			base:        a.base,
		}
	}
	return v, nil
}

// Start launches background work until ctx ends or Close is called: JWKS
// refresh, keys file watching, and Redis change notifications. Calling it is
// optional (everything also works lazily) but recommended; a second call is
// a no-op.
func (a *Authenticator) Start(ctx context.Context) {
	if !a.started.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() { // tie ctx to Close
		select {
		case <-a.base.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	if a.jwt != nil && a.jwt.jwks != nil {
		a.wg.Go(func() { a.jwt.jwks.run(ctx) })
	}
	if a.redisKeys != nil {
		a.wg.Go(func() { a.redisKeys.watch(ctx) })
	}
	if a.cfg.KeysFile != "" {
		if err := a.watchKeysFile(ctx); err != nil {
			a.logger.Warn("keys file watch unavailable; call ReloadKeys to reload", "file", a.cfg.KeysFile, "error", err)
		}
	}
}

// Close stops background work and waits for it.
func (a *Authenticator) Close() {
	a.cancel()
	a.wg.Wait()
	if a.jwt != nil && a.jwt.jwks != nil {
		a.jwt.jwks.wg.Wait()
	}
}

// Ready reports whether the identity sources are healthy: the last keys file
// reload worked and, with a JWKS URL, a key set has been fetched.
func (a *Authenticator) Ready() error {
	if p := a.keysErr.Load(); p != nil {
		return *p
	}
	if a.jwt != nil && a.jwt.jwks != nil && a.jwt.jwks.ring.Load() == nil {
		return errors.New("identity: no JWKS fetched yet")
	}
	return nil
}

// ReloadKeys rereads the keys file. On error the last good keys stay in use
// and the error is returned (and reported by Ready).
func (a *Authenticator) ReloadKeys() error {
	data, err := os.ReadFile(a.cfg.KeysFile)
	if err == nil {
		sum := sha256.Sum256(data)
		if old := a.fileHash.Load(); old != nil && *old == sum && a.keysErr.Load() == nil {
			return nil // unchanged
		}
		var kf *KeysFile
		if kf, err = ParseKeysFile(data); err == nil {
			var ks keySet
			if ks, err = newKeySet(kf); err == nil {
				old := a.fileKeys.Swap(&ks)
				a.fileHash.Store(&sum)
				a.keysErr.Store(nil)
				a.m.keysReloads.WithLabelValues("ok").Inc()
				a.logger.Info("API keys loaded", "file", a.cfg.KeysFile, "keys", len(ks))
				if a.cfg.OnKeyChange != nil && old != nil {
					for _, c := range diffKeys(*old, ks, a.clock.Now()) {
						a.cfg.OnKeyChange(c)
					}
				}
				return nil
			}
		}
	}
	err = fmt.Errorf("identity: KeysFile %s: %w", a.cfg.KeysFile, err)
	a.keysErr.Store(&err)
	a.m.keysReloads.WithLabelValues("error").Inc()
	if a.fileKeys.Load() != nil {
		a.logger.Warn("API keys file reload failed; keeping the last good keys", "error", err)
	}
	return err
}

// watchKeysFile reloads the keys file when its directory changes. Watching
// the directory catches atomic renames and Kubernetes ConfigMap symlink swaps.
func (a *Authenticator) watchKeysFile(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	if err := w.Add(filepath.Dir(a.cfg.KeysFile)); err != nil {
		_ = w.Close() // the Add error is the one to report
		return err
	}
	a.wg.Go(func() {
		defer w.Close()
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				debounce = time.After(50 * time.Millisecond)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				a.logger.Warn("keys file watch error", "error", err)
			case <-debounce:
				debounce = nil
				_ = a.ReloadKeys() // logged and kept in Ready
			}
		}
	})
	return nil
}

// Authenticate returns the principal for r. It never fails: problems show up
// as an anonymous principal with Error set. ctx bounds JWKS and Redis waits.
//
// Precedence: the first credential presented decides, and a rejected one
// never falls through to the next (fail closed):
//  1. Authorization: Bearer <API key or JWT>
//  2. x-api-key
//  3. SourcePrincipal, when TrustSourcePrincipal
//  4. XFCC, when TrustXFCC
//  5. anonymous
//
// User credentials come before the peer's, because with mTLS the peer is
// usually a gateway acting for the user.
func (a *Authenticator) Authenticate(ctx context.Context, r Request) Principal {
	p, attempted, detail := a.authenticate(ctx, r)
	result := "ok"
	if p.Error != "" {
		result = p.Error
		if detail != "" {
			result = detail // what the caller is not told, the metric may say
		}
		p = Principal{Kind: KindAnonymous, Error: p.Error}
	}
	a.m.observe(attempted, result)
	return p
}

// authenticate returns the principal, the kind of credential tried, and,
// when the principal's reason hides a detail from the caller, that detail
// for the metrics.
func (a *Authenticator) authenticate(ctx context.Context, r Request) (Principal, Kind, string) {
	max := a.cfg.MaxCredentialBytes
	switch {
	case r.Authorization != "":
		if len(r.Authorization) > max {
			return fail(ReasonOversized), KindAnonymous, ""
		}
		scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Authorization), " ")
		if !ok {
			return fail(ReasonMalformed), KindAnonymous, ""
		}
		if !strings.EqualFold(scheme, "Bearer") {
			return fail(ReasonUnsupportedScheme), KindAnonymous, ""
		}
		cred = strings.TrimSpace(cred)
		if strings.HasPrefix(cred, APIKeyPrefix) {
			p, detail := a.apiKey(ctx, cred)
			return p, KindAPIKey, detail
		}
		if strings.Count(cred, ".") == 2 {
			return a.jwtToken(ctx, cred), KindJWT, ""
		}
		return fail(ReasonMalformed), KindAnonymous, ""
	case r.APIKey != "":
		if len(r.APIKey) > max {
			return fail(ReasonOversized), KindAPIKey, ""
		}
		p, detail := a.apiKey(ctx, strings.TrimSpace(r.APIKey))
		return p, KindAPIKey, detail
	case a.cfg.TrustSourcePrincipal && r.SourcePrincipal != "":
		if len(r.SourcePrincipal) > max {
			return fail(ReasonOversized), KindMTLS, ""
		}
		return a.peers.principal(r.SourcePrincipal), KindMTLS, ""
	case a.cfg.TrustXFCC && r.XFCC != "":
		if len(r.XFCC) > max {
			return fail(ReasonOversized), KindMTLS, ""
		}
		id, ok := xfccIdentity(r.XFCC)
		if !ok {
			return fail(ReasonMalformed), KindMTLS, ""
		}
		return a.peers.principal(id), KindMTLS, ""
	}
	return Principal{Kind: KindAnonymous}, KindAnonymous, ""
}

func fail(reason string) Principal { return Principal{Kind: KindAnonymous, Error: reason} }

// apiKey verifies an API key. An unknown id and a wrong secret give the
// caller one reason (ReasonInvalidKey) and cost the same HMAC and compare,
// so neither the answer nor its timing tells which key ids exist; detail
// keeps the difference for the metrics.
func (a *Authenticator) apiKey(ctx context.Context, key string) (p Principal, detail string) {
	if a.mac == nil {
		return fail(ReasonNotConfigured), ""
	}
	id, _, ok := ParseAPIKey(key)
	if !ok {
		return fail(ReasonMalformed), ""
	}
	now := a.clock.Now()
	sk, err := a.lookupKey(ctx, id, now)
	if err != nil {
		a.logger.Warn("API key store lookup failed; rejecting", "key_id", id, "error", err)
		return fail(ReasonKeyStoreUnavailable), ""
	}
	want := &a.dummySum
	if sk != nil {
		want = &sk.sum
	}
	// The secret is checked before the status, so only a key holder learns
	// that a key is revoked or expired.
	sum := a.mac.sum(key)
	match := hmac.Equal(sum[:], want[:])
	switch {
	case sk == nil:
		return fail(ReasonInvalidKey), ReasonUnknownKey
	case !match:
		return fail(ReasonInvalidKey), ReasonBadSecret
	}
	if st := sk.rec.Status(now); st != "active" {
		return fail(st), ""
	}
	return Principal{ID: sk.id, Kind: KindAPIKey, Roles: sk.rec.Roles, Tenant: sk.rec.Tenant, Claims: sk.claims}, ""
}

// lookupKey finds a key by id: Redis first (its record wins, so revoking
// there reaches every replica), then the keys file.
func (a *Authenticator) lookupKey(ctx context.Context, id string, now time.Time) (*storedKey, error) {
	if a.redisKeys != nil {
		sk, err := a.redisKeys.get(ctx, id, now)
		if err != nil || sk != nil {
			return sk, err
		}
	}
	if ks := a.fileKeys.Load(); ks != nil {
		return (*ks)[id], nil
	}
	return nil, nil
}

func (a *Authenticator) jwtToken(ctx context.Context, tok string) Principal {
	if a.jwt == nil {
		return fail(ReasonNotConfigured)
	}
	now := a.clock.Now()
	key := tokenKey(tok)
	if e, ok := a.jwtCache.get(key, now); ok {
		// A verdict holds only while the key that gave it is still trusted.
		if a.jwt.stillTrusted(ctx, e.signer) {
			a.m.jwtHit.Inc()
			return e.p
		}
		a.jwtCache.drop(key)
	}
	a.m.jwtMiss.Inc()
	p, exp, signer, reason := a.jwt.verify(ctx, tok, now)
	if reason != "" {
		return fail(reason)
	}
	a.jwtCache.put(key, jwtEntry{p: p, exp: exp, signer: signer}, now)
	return p
}

// tokenKey hashes a token without copying it to the heap.
func tokenKey(tok string) [sha256.Size]byte {
	h := sha256.New()
	var buf [256]byte
	for len(tok) > 0 {
		n := copy(buf[:], tok)
		h.Write(buf[:n])
		tok = tok[n:]
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
