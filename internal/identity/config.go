package identity

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config configures the Authenticator. The zero value is valid and
// authenticates nothing: every request is anonymous until a credential source
// (API keys, JWT keys, trusted mTLS peers) is configured. Defaults are filled
// in by New; DefaultConfig shows them.
type Config struct {
	// KeysFile is a YAML or JSON file of API key records (see KeysFile type),
	// hot-reloaded on change; a malformed reload keeps the last good set.
	// Default: none. Requires a pepper.
	KeysFile string `json:"keys_file,omitempty"`
	// PepperFile holds the server-side HMAC secret that API key hashes are
	// keyed with, so a leaked keys file or Redis dump cannot be brute-forced
	// offline. Trailing whitespace is trimmed. Default: none.
	PepperFile string `json:"pepper_file,omitempty"`
	// Pepper is the pepper itself (e.g. from BULWARK_KEY_PEPPER) when no file
	// is used. Setting both Pepper and PepperFile is an error. At least 16 bytes.
	Pepper string `json:"-"`
	// RedisKeyPrefix prefixes the Redis hash of API keys and its change
	// channel, so several deployments can share one Redis. Default "bulwark:".
	RedisKeyPrefix string `json:"redis_key_prefix,omitempty"`
	// RedisCacheTTL bounds how long a Redis key lookup (found or not) is reused
	// locally; it is the worst-case revocation delay when the change
	// notification is lost. Default 500ms; negative disables the cache.
	RedisCacheTTL time.Duration `json:"redis_cache_ttl,omitempty"`
	// RedisTimeout bounds one Redis key lookup (the client needs
	// ContextTimeoutEnabled). Default 250ms.
	RedisTimeout time.Duration `json:"redis_timeout,omitempty"`

	// JWKSURL is where the issuer's signing keys are fetched. Default: none.
	JWKSURL string `json:"jwks_url,omitempty"`
	// JWTKeysFile holds static public keys (a JWKS document or PEM public
	// keys/certificates), for issuers without a JWKS endpoint. Default: none.
	JWTKeysFile string `json:"jwt_keys_file,omitempty"`
	// Issuer must equal the token's "iss". Required with JWT keys (see
	// InsecureSkipIssuerAudience).
	Issuer string `json:"jwt_issuer,omitempty"`
	// Audience must be among the token's "aud". Required with JWT keys (see
	// InsecureSkipIssuerAudience).
	Audience string `json:"jwt_audience,omitempty"`
	// InsecureSkipIssuerAudience accepts JWT keys without Issuer and Audience:
	// the one that is not set is not checked, so a token the issuer minted
	// for any other service (or another issuer sharing the keys) is accepted
	// with its roles and tenant. An explicit opt-in, warned about at start.
	// Default false: Validate refuses JWT keys without both.
	InsecureSkipIssuerAudience bool `json:"jwt_insecure_skip_issuer_audience,omitempty"`
	// Algorithms is the JWS algorithm allow-list. Only asymmetric algorithms
	// are accepted ("none" and HS* never), which rules out HMAC/RSA key
	// confusion. Default RS256, ES256, EdDSA.
	Algorithms []string `json:"jwt_algorithms,omitempty"`
	// Leeway tolerates clock skew on exp, nbf and iat. Default 30s.
	Leeway time.Duration `json:"jwt_leeway,omitempty"`
	// SubjectClaim names the claim used as Principal.ID. Default "sub".
	SubjectClaim string `json:"jwt_subject_claim,omitempty"`
	// RolesClaim names the claim holding roles: an array of strings or a
	// space-separated string (so "scope" works). Dots address nested claims
	// ("realm_access.roles"). Default "roles".
	RolesClaim string `json:"jwt_roles_claim,omitempty"`
	// TenantClaim names the claim holding the tenant. Default "tenant".
	TenantClaim string `json:"jwt_tenant_claim,omitempty"`
	// JWKSFetchTimeout bounds one JWKS fetch. Default 5s.
	JWKSFetchTimeout time.Duration `json:"jwks_fetch_timeout,omitempty"`
	// JWKSRefreshInterval is how long a fetched JWKS is used when its
	// response gives no cache lifetime (Cache-Control max-age, Expires).
	// Default 5m.
	JWKSRefreshInterval time.Duration `json:"jwks_refresh_interval,omitempty"`
	// JWKSMinCacheTTL and JWKSMaxCacheTTL bound the lifetime a JWKS response
	// asks for: the key set is fetched again when it ends, in the background
	// and, should that be late, before the next token is accepted. The upper
	// bound is the longest a key withdrawn from the JWKS keeps verifying
	// tokens (cached ones included). Defaults 30s and 1h.
	JWKSMinCacheTTL time.Duration `json:"jwks_min_cache_ttl,omitempty"`
	JWKSMaxCacheTTL time.Duration `json:"jwks_max_cache_ttl,omitempty"`
	// MaxTokenLifetime rejects tokens whose exp is further than this after
	// their iat (or, without iat, after now) as "lifetime_too_long", so a
	// token minted to live for years does not. Default 24h; negative: no
	// bound.
	MaxTokenLifetime time.Duration `json:"jwt_max_token_lifetime,omitempty"`
	// JWKSMinRefreshInterval is the least time between two fetches, so tokens
	// with unknown kids cannot make Bulwark hammer the issuer. Default 15s.
	JWKSMinRefreshInterval time.Duration `json:"jwks_min_refresh_interval,omitempty"`
	// JWTCacheSize bounds the number of verified tokens kept until their
	// expiry; a cached token is accepted only while the key that verified it
	// is still in the current key set. Default 10000; negative disables the
	// cache.
	JWTCacheSize int `json:"jwt_cache_size,omitempty"`

	// TrustSourcePrincipal makes Envoy's attributes.source.principal (the
	// verified peer certificate's SAN/subject) an identity. Only safe when
	// Envoy terminates mTLS. Default false.
	TrustSourcePrincipal bool `json:"trust_source_principal,omitempty"`
	// TrustXFCC makes the x-forwarded-client-cert header an identity. Only
	// safe when the nearest proxy sanitizes it. Default false.
	TrustXFCC bool `json:"trust_xfcc,omitempty"`
	// MTLSPrincipals gives roles and tenant to mTLS peers, by exact ID or by a
	// prefix ending in "*" (longest prefix wins). Unlisted peers get no roles.
	MTLSPrincipals map[string]PeerIdentity `json:"mtls_principals,omitempty"`

	// MaxCredentialBytes caps each credential header; longer ones are
	// rejected as "oversized" before any parsing. Default 8192.
	MaxCredentialBytes int `json:"max_credential_bytes,omitempty"`

	// OnKeyChange, when set, is told of every API key created, revoked,
	// removed or edited while serving: keys-file reloads after the first
	// load, and changes announced through Redis (read back to learn what
	// they were). It runs on the reloading or watching goroutine, never on
	// a request's. Default: none.
	OnKeyChange func(KeyChange) `json:"-"`
}

// PeerIdentity is what an mTLS peer is allowed to be: roles and a tenant.
type PeerIdentity struct {
	Roles  []string `json:"roles,omitempty"`
	Tenant string   `json:"tenant,omitempty"`
}

// DefaultConfig returns a Config with every default filled in and no
// credential source configured.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

// defaultAlgorithms is the allow-list when none is configured.
var defaultAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// asymmetricAlgorithms is every algorithm Algorithms may name.
var asymmetricAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

func (c Config) withDefaults() Config {
	if c.RedisKeyPrefix == "" {
		c.RedisKeyPrefix = "bulwark:"
	}
	if c.RedisCacheTTL == 0 {
		c.RedisCacheTTL = 500 * time.Millisecond
	}
	if c.RedisTimeout == 0 {
		c.RedisTimeout = 250 * time.Millisecond
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = append([]string(nil), defaultAlgorithms...)
	}
	if c.Leeway == 0 {
		c.Leeway = 30 * time.Second
	}
	if c.SubjectClaim == "" {
		c.SubjectClaim = "sub"
	}
	if c.RolesClaim == "" {
		c.RolesClaim = "roles"
	}
	if c.TenantClaim == "" {
		c.TenantClaim = "tenant"
	}
	if c.JWKSFetchTimeout == 0 {
		c.JWKSFetchTimeout = 5 * time.Second
	}
	if c.JWKSRefreshInterval == 0 {
		c.JWKSRefreshInterval = 5 * time.Minute
	}
	if c.JWKSMinRefreshInterval == 0 {
		c.JWKSMinRefreshInterval = 15 * time.Second
	}
	if c.JWKSMinCacheTTL == 0 {
		c.JWKSMinCacheTTL = 30 * time.Second
	}
	if c.JWKSMaxCacheTTL == 0 {
		c.JWKSMaxCacheTTL = time.Hour
	}
	if c.MaxTokenLifetime == 0 {
		c.MaxTokenLifetime = 24 * time.Hour
	}
	if c.JWTCacheSize == 0 {
		c.JWTCacheSize = 10000
	}
	if c.MaxCredentialBytes == 0 {
		c.MaxCredentialBytes = 8192
	}
	return c
}

// Validate reports the first invalid field by name. It checks the config
// as given plus defaults, so zero fields are fine.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("identity: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Pepper != "" && c.PepperFile != "" {
		bad("Pepper", "set either Pepper or PepperFile, not both")
	}
	if c.Pepper != "" && len(strings.TrimSpace(c.Pepper)) < minPepperBytes {
		bad("Pepper", "must be at least %d bytes", minPepperBytes)
	}
	if c.KeysFile != "" && c.Pepper == "" && c.PepperFile == "" {
		bad("PepperFile", "KeysFile %q needs a pepper (PepperFile or Pepper)", c.KeysFile)
	}
	if c.RedisTimeout < 0 {
		bad("RedisTimeout", "must not be negative")
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("JWKSURL", "%q is not an http(s) URL", c.JWKSURL)
		}
	}
	if c.jwtEnabled() && !c.InsecureSkipIssuerAudience {
		if c.Issuer == "" {
			bad("Issuer", "JWT keys are configured but no issuer: tokens from any issuer sharing the keys would be accepted (set it, or InsecureSkipIssuerAudience to accept that)")
		}
		if c.Audience == "" {
			bad("Audience", "JWT keys are configured but no audience: tokens minted for any other service would be accepted (set it, or InsecureSkipIssuerAudience to accept that)")
		}
	}
	for _, alg := range c.Algorithms {
		if !asymmetricAlgorithms[alg] {
			bad("Algorithms", "%q is not allowed (asymmetric algorithms only: RS*, PS*, ES*, EdDSA)", alg)
		}
	}
	if c.Leeway < 0 || c.Leeway > 10*time.Minute {
		bad("Leeway", "must be between 0 and 10m, got %s", c.Leeway)
	}
	if c.JWKSFetchTimeout < 0 {
		bad("JWKSFetchTimeout", "must not be negative")
	}
	if c.JWKSMinRefreshInterval < 0 {
		bad("JWKSMinRefreshInterval", "must not be negative")
	}
	if c.JWKSRefreshInterval < c.JWKSMinRefreshInterval {
		bad("JWKSRefreshInterval", "%s is shorter than JWKSMinRefreshInterval %s", c.JWKSRefreshInterval, c.JWKSMinRefreshInterval)
	}
	if c.JWKSMinCacheTTL < 0 {
		bad("JWKSMinCacheTTL", "must not be negative")
	}
	if c.JWKSMaxCacheTTL < c.JWKSMinCacheTTL {
		bad("JWKSMaxCacheTTL", "%s is shorter than JWKSMinCacheTTL %s", c.JWKSMaxCacheTTL, c.JWKSMinCacheTTL)
	}
	if c.MaxCredentialBytes < 0 {
		bad("MaxCredentialBytes", "must not be negative")
	}
	for id := range c.MTLSPrincipals {
		if id == "" || id == "*" {
			bad("MTLSPrincipals", "%q would match every peer; list peers or trust-domain prefixes", id)
		}
	}
	return errors.Join(errs...)
}

// jwtEnabled reports whether any JWT key source is configured.
func (c Config) jwtEnabled() bool { return c.JWKSURL != "" || c.JWTKeysFile != "" }
