package identity

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// storedKey is a KeyRecord prepared for the hot path: hash decoded, claims
// built once and shared read-only by every Principal it produces.
type storedKey struct {
	rec    KeyRecord
	sum    [sha256.Size]byte
	id     string
	claims map[string]any
}

func prepareKey(r KeyRecord) (*storedKey, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	sum, _ := decodeHash(r.Hash) // checked by Validate
	id := r.Principal
	if id == "" {
		id = r.ID
	}
	r.Roles = append([]string(nil), r.Roles...)
	return &storedKey{rec: r, sum: sum, id: id, claims: map[string]any{"key_id": r.ID}}, nil
}

// keySet is an immutable snapshot of the keys file.
type keySet map[string]*storedKey

func newKeySet(kf *KeysFile) (keySet, error) {
	ks := make(keySet, len(kf.Keys))
	for i, r := range kf.Keys {
		sk, err := prepareKey(r)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		ks[r.ID] = sk
	}
	return ks, nil
}

// RedisKeyStore keeps API key records in one Redis hash (field = key ID,
// value = the KeyRecord as JSON), so every replica sees a revocation on its
// next lookup. One hash key keeps it Cluster-safe. Changes are announced on
// a pub/sub channel so replicas can drop their short-lived local copy at once.
type RedisKeyStore struct {
	rdb     redis.UniversalClient
	key     string
	channel string
}

// NewRedisKeyStore returns a store under prefix (e.g. "bulwark:").
func NewRedisKeyStore(rdb redis.UniversalClient, prefix string) *RedisKeyStore {
	return &RedisKeyStore{rdb: rdb, key: prefix + "apikeys", channel: prefix + "apikeys:changed"}
}

// Get returns the record for id, or ErrKeyNotFound.
func (s *RedisKeyStore) Get(ctx context.Context, id string) (*KeyRecord, error) {
	_, r, err := s.get(ctx, id)
	return r, err
}

// get returns the record for id and its stored text (update's revision).
func (s *RedisKeyStore) get(ctx context.Context, id string) (string, *KeyRecord, error) {
	raw, err := s.rdb.HGet(ctx, s.key, id).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil, ErrKeyNotFound
	}
	if err != nil {
		return "", nil, fmt.Errorf("identity: redis get key %q: %w", id, err)
	}
	var r KeyRecord
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return "", nil, fmt.Errorf("identity: redis key %q: %w", id, err)
	}
	return raw, &r, nil
}

// Create stores a new record; it fails if the ID is taken, so a create can
// never overwrite (and thereby un-revoke) an existing key. HSETNX is atomic
// against update's compare-and-swap: neither overwrites the other.
func (s *RedisKeyStore) Create(ctx context.Context, r KeyRecord) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("identity: encode key: %w", err)
	}
	ok, err := s.rdb.HSetNX(ctx, s.key, r.ID, raw).Result()
	if err != nil {
		return fmt.Errorf("identity: redis create key %q: %w", r.ID, err)
	}
	if !ok {
		return fmt.Errorf("identity: key %q already exists", r.ID)
	}
	return s.announce(ctx, r.ID)
}

// Revoke marks id revoked at the given time and announces the change. The
// record stays, so the key reports "revoked" rather than "unknown_key".
// match, when not nil, must accept the record, else Revoke answers
// ErrKeyNotFound (a caller scoped to one tenant cannot tell another tenant's
// key from a missing one). The returned record is the one stored; it is
// returned with the error when only the announcement failed.
func (s *RedisKeyStore) Revoke(ctx context.Context, id string, at time.Time, match func(KeyRecord) bool) (*KeyRecord, error) {
	r, err := s.update(ctx, id, func(r *KeyRecord) error {
		if match != nil && !match(*r) {
			return ErrKeyNotFound
		}
		if !r.RevokedAt.IsZero() {
			return ErrNoChange
		}
		r.RevokedAt = at.UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, s.announce(ctx, id)
}

// maxUpdateTries bounds the compare-and-swap retries of one update; each
// retry means another writer changed this very record in between.
const maxUpdateTries = 100

// casLua replaces field ARGV[1] of hash KEYS[1] with ARGV[3] only if it
// still holds ARGV[2]: a compare-and-swap on one record, whose revision is
// its whole stored value. Writers of other records never conflict with it.
const casLua = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`

// casScript is immutable: the script text and its SHA.
var casScript = redis.NewScript(casLua)

// update changes one record atomically against every other writer: it
// reads the record, lets fn change it, and stores the result only if the
// record is still what was read (casLua); otherwise it reads again and
// re-applies fn, so no writer's change is ever overwritten with a stale
// copy. fn returning ErrNoChange leaves the record as it is.
func (s *RedisKeyStore) update(ctx context.Context, id string, fn func(*KeyRecord) error) (*KeyRecord, error) {
	for range maxUpdateTries {
		old, r, err := s.get(ctx, id)
		if err != nil {
			return nil, err
		}
		switch err := fn(r); {
		case errors.Is(err, ErrNoChange):
			return r, nil
		case err != nil:
			return nil, err
		}
		enc, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("identity: encode key: %w", err)
		}
		swapped, err := casScript.Run(ctx, s.rdb, []string{s.key}, id, old, enc).Int()
		if err != nil {
			return nil, fmt.Errorf("identity: redis update key %q: %w", id, err)
		}
		if swapped == 1 {
			return r, nil
		}
		// Another writer changed the record: start again from its version.
	}
	return nil, fmt.Errorf("identity: redis key %q: changed by others %d times in a row", id, maxUpdateTries)
}

// List returns every record (hashes included; callers must not print them).
func (s *RedisKeyStore) List(ctx context.Context) ([]KeyRecord, error) {
	all, err := s.rdb.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, fmt.Errorf("identity: redis list keys: %w", err)
	}
	out := make([]KeyRecord, 0, len(all))
	for id, raw := range all {
		var r KeyRecord
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return nil, fmt.Errorf("identity: redis key %q: %w", id, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *RedisKeyStore) announce(ctx context.Context, id string) error {
	if err := s.rdb.Publish(ctx, s.channel, id).Err(); err != nil {
		// The record is written; replicas still see it after RedisCacheTTL.
		return fmt.Errorf("identity: key %q stored, change not announced: %w", id, err)
	}
	return nil
}

// redisLookup caches Redis lookups (hits and misses) for a short TTL so the
// hot path costs a map read, and a flood of one key costs one round trip per
// TTL. Entries are dropped early when a change is announced.
type redisLookup struct {
	store    *RedisKeyStore
	ttl      time.Duration
	tmo      time.Duration
	onChange func(KeyChange) // nil: changes are not reported

	mu      sync.RWMutex
	entries map[string]redisEntry
}

type redisEntry struct {
	key     *storedKey // nil: not in Redis
	fetched time.Time
}

const maxRedisCache = 10000

func (l *redisLookup) get(ctx context.Context, id string, now time.Time) (*storedKey, error) {
	if l.ttl > 0 {
		l.mu.RLock()
		e, ok := l.entries[id]
		l.mu.RUnlock()
		if ok && now.Sub(e.fetched) < l.ttl {
			return e.key, nil
		}
	}
	if l.tmo > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.tmo)
		defer cancel()
	}
	r, err := l.store.Get(ctx, id)
	var sk *storedKey
	switch {
	case errors.Is(err, ErrKeyNotFound):
	case err != nil:
		return nil, err
	default:
		if sk, err = prepareKey(*r); err != nil {
			return nil, fmt.Errorf("identity: redis key %q: %w", id, err)
		}
	}
	if l.ttl > 0 {
		l.mu.Lock()
		if len(l.entries) >= maxRedisCache {
			for k, e := range l.entries {
				if now.Sub(e.fetched) >= l.ttl || len(l.entries) >= maxRedisCache {
					delete(l.entries, k)
				}
				if len(l.entries) < maxRedisCache*9/10 {
					break
				}
			}
		}
		l.entries[id] = redisEntry{key: sk, fetched: now}
		l.mu.Unlock()
	}
	return sk, nil
}

func (l *redisLookup) forget(id string) {
	l.mu.Lock()
	delete(l.entries, id)
	l.mu.Unlock()
}

// watch drops cached entries when another process announces a change. It
// returns when ctx ends.
func (l *redisLookup) watch(ctx context.Context) {
	ps := l.store.rdb.Subscribe(ctx, l.store.channel)
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			l.forget(m.Payload)
			l.announced(ctx, m.Payload, time.Now())
		}
	}
}
