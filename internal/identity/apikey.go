package identity

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// APIKeyPrefix starts every API key, so leaked keys are easy to find for
// secret scanners and for Bulwark's own secrets detector.
const APIKeyPrefix = "bwk_"

// HashScheme prefixes stored hashes so the scheme can change without
// ambiguity.
const HashScheme = "hmac-sha256:"

const (
	minPepperBytes  = 16
	maxKeyIDLen     = 64
	secretLen       = 43 // 43 base62 characters ≈ 256 bits
	maxAPIKeyLen    = 512
	base62          = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	maxKeysFileSize = 16 << 20
)

// ErrKeyNotFound is returned by key stores when no record has the given ID.
var ErrKeyNotFound = errors.New("identity: API key not found")

// KeyRecord is one stored API key: everything about it except the secret,
// which exists only in the caller's hands and as an HMAC in Hash.
type KeyRecord struct {
	// ID is the public part of the key (bwk_<ID>_<secret>): letters, digits
	// and '-', at most 64 characters.
	ID string `json:"id"`
	// Principal is the identity the key authenticates as. Default: ID.
	Principal string `json:"principal,omitempty"`
	// Roles are handed to policy as principal.roles.
	Roles []string `json:"roles,omitempty"`
	// Tenant is handed to policy as principal.tenant.
	Tenant string `json:"tenant,omitempty"`
	// Hash is HashScheme + hex(HMAC-SHA256(pepper, whole key)). Hashing the
	// whole key binds the hash to its ID, so records cannot be swapped.
	Hash string `json:"hash"`
	// CreatedAt is informational.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// ExpiresAt, when set, ends the key's validity ("expired").
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Disabled suspends the key ("disabled") without revoking it.
	Disabled bool `json:"disabled,omitempty"`
	// RevokedAt, when set, ends the key's validity for good ("revoked"). The
	// record is kept so a revoked key is told apart from an unknown one.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Status is "active", "disabled", "revoked" or "expired" at the given time.
func (r KeyRecord) Status(now time.Time) string {
	switch {
	case !r.RevokedAt.IsZero():
		return ReasonRevoked
	case r.Disabled:
		return ReasonDisabled
	case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
		return ReasonExpired
	}
	return "active"
}

// Validate checks the record's shape (not its secret).
func (r KeyRecord) Validate() error {
	if !validKeyID(r.ID) {
		return fmt.Errorf("id %q: want 1-%d letters, digits or '-'", r.ID, maxKeyIDLen)
	}
	if _, err := decodeHash(r.Hash); err != nil {
		return fmt.Errorf("key %q: %w", r.ID, err)
	}
	for _, role := range r.Roles {
		if strings.TrimSpace(role) == "" {
			return fmt.Errorf("key %q: empty role", r.ID)
		}
	}
	return nil
}

// KeysFile is the document stored in Config.KeysFile, YAML or JSON:
//
//	keys:
//	- id: ci
//	  principal: ci-bot
//	  roles: [user]
//	  tenant: acme
//	  hash: hmac-sha256:…
type KeysFile struct {
	Keys []KeyRecord `json:"keys"`
}

// ParseKeysFile decodes and validates a keys file. Unknown fields are errors
// so a typo such as "role:" does not silently drop a restriction.
func ParseKeysFile(data []byte) (*KeysFile, error) {
	if len(data) > maxKeysFileSize {
		return nil, fmt.Errorf("keys file larger than %d bytes", maxKeysFileSize)
	}
	var kf KeysFile
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.UnmarshalStrict(data, &kf); err != nil {
			return nil, fmt.Errorf("parse keys file: %w", err)
		}
	}
	seen := make(map[string]bool, len(kf.Keys))
	for i, r := range kf.Keys {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("keys[%d]: duplicate id %q", i, r.ID)
		}
		seen[r.ID] = true
	}
	return &kf, nil
}

// ReadKeysFile reads and parses path; a missing file is an empty set, so
// `bulwark keys create` can start a new file.
func ReadKeysFile(path string) (*KeysFile, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the keys file is operator configuration, trusted (SECURITY.md)
	if errors.Is(err, os.ErrNotExist) {
		return &KeysFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read keys file: %w", err)
	}
	kf, err := ParseKeysFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kf, nil
}

// writeKeysFile writes kf as YAML to path atomically (temp file, fsync,
// rename, fsync of the directory), mode 0600, so a hot-reloading server never
// sees a half-written file. It does not exclude other writers: callers hold
// the lock (UpdateKeysFile, the only writer outside tests).
func writeKeysFile(path string, kf *KeysFile) error {
	out, err := yaml.Marshal(kf)
	if err != nil {
		return fmt.Errorf("encode keys file: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write keys file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(out); err != nil {
		_ = tmp.Close() // the file is discarded; the write error is the one to report
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write keys file: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write keys file: sync %s: %w", dir, err)
	}
	return nil
}

// Find returns the record with id, or nil.
func (kf *KeysFile) Find(id string) *KeyRecord {
	for i := range kf.Keys {
		if kf.Keys[i].ID == id {
			return &kf.Keys[i]
		}
	}
	return nil
}

// NewAPIKey returns a fresh key bwk_<id>_<secret> with a 256-bit secret from
// rnd (crypto/rand when nil). The secret is base62 so the whole key selects
// with a double click and survives any header or shell quoting.
func NewAPIKey(rnd io.Reader, id string) (string, error) {
	if !validKeyID(id) {
		return "", fmt.Errorf("identity: key id %q: want 1-%d letters, digits or '-'", id, maxKeyIDLen)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	secret := make([]byte, 0, secretLen)
	var buf [64]byte
	for len(secret) < secretLen {
		if _, err := io.ReadFull(rnd, buf[:]); err != nil {
			return "", fmt.Errorf("identity: random: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(secret) < secretLen { // 248 = 4*62: no modulo bias
				secret = append(secret, base62[b%62])
			}
		}
	}
	return APIKeyPrefix + id + "_" + string(secret), nil
}

// ParseAPIKey splits bwk_<id>_<secret>. It only checks the shape; whether the
// key is valid is the store's business.
func ParseAPIKey(key string) (id, secret string, ok bool) {
	if len(key) > maxAPIKeyLen || !strings.HasPrefix(key, APIKeyPrefix) {
		return "", "", false
	}
	rest := key[len(APIKeyPrefix):]
	i := strings.IndexByte(rest, '_')
	if i <= 0 {
		return "", "", false
	}
	id, secret = rest[:i], rest[i+1:]
	if !validKeyID(id) || len(secret) < 16 {
		return "", "", false
	}
	for j := 0; j < len(secret); j++ {
		if c := secret[j]; c <= ' ' || c >= 0x7f {
			return "", "", false
		}
	}
	return id, secret, true
}

// HashAPIKey returns the stored form of key: HashScheme + hex HMAC-SHA256.
func HashAPIKey(pepper []byte, key string) string {
	m := hmac.New(sha256.New, pepper)
	m.Write([]byte(key))
	return HashScheme + hex.EncodeToString(m.Sum(nil))
}

// LoadPepper returns the pepper from file (trailing whitespace trimmed) or
// inline, and checks its length.
func LoadPepper(file, inline string) ([]byte, error) {
	var p []byte
	switch {
	case file != "" && inline != "":
		return nil, errors.New("identity: pepper given both as file and inline")
	case file != "":
		b, err := os.ReadFile(file) // #nosec G304 -- the pepper file is operator configuration, trusted (SECURITY.md)
		if err != nil {
			return nil, fmt.Errorf("identity: read pepper: %w", err)
		}
		p = bytes.TrimRight(b, " \t\r\n")
	default:
		p = []byte(strings.TrimRight(inline, " \t\r\n"))
	}
	if len(p) < minPepperBytes {
		return nil, fmt.Errorf("identity: pepper must be at least %d bytes, got %d", minPepperBytes, len(p))
	}
	return p, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > maxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func decodeHash(s string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h, ok := strings.CutPrefix(s, HashScheme)
	if !ok {
		return sum, fmt.Errorf("hash must start with %q", HashScheme)
	}
	if len(h) != hex.EncodedLen(sha256.Size) {
		return sum, errors.New("hash has the wrong length")
	}
	if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
		return sum, errors.New("hash is not hex")
	}
	return sum, nil
}

// macer computes key HMACs without allocating: each pooled state holds a
// keyed HMAC and scratch buffers.
type macer struct {
	pool sync.Pool
}

type macState struct {
	h   hash.Hash
	in  []byte
	out []byte
}

func newMacer(pepper []byte) *macer {
	p := append([]byte(nil), pepper...)
	m := &macer{}
	m.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, p), in: make([]byte, 0, 128), out: make([]byte, 0, sha256.Size)}
	}
	return m
}

func (m *macer) sum(key string) (sum [sha256.Size]byte) {
	s := m.pool.Get().(*macState)
	s.h.Reset()
	s.in = append(s.in[:0], key...)
	s.h.Write(s.in)
	s.out = s.h.Sum(s.out[:0])
	copy(sum[:], s.out)
	if cap(s.in) <= 1024 {
		m.pool.Put(s)
	}
	return sum
}
