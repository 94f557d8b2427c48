package identity

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"
)

// The actions a KeyChange reports.
const (
	KeyCreated = "created"
	KeyRevoked = "revoked"
	KeyRemoved = "removed"
	KeyChanged = "changed"
)

// KeyChange is one API key change the Authenticator noticed while serving:
// a keys-file reload that added, revoked, removed or edited a key, or a
// change another process (`bulwark keys` against Redis) announced. It names
// the key and who it authenticates, never the key or its hash, so it can go
// to the audit trail as is.
type KeyChange struct {
	// Action is KeyCreated, KeyRevoked, KeyRemoved or KeyChanged.
	Action string
	// ID is the key id (the public part of bwk_<id>_<secret>).
	ID string
	// Principal, Roles and Tenant describe the key after the change (before
	// it, for KeyRemoved).
	Principal string
	Roles     []string
	Tenant    string
	// Status is the key's status after the change ("active", "revoked", ...;
	// "" for KeyRemoved).
	Status string
	// Fields lists what a KeyChanged edit touched (roles, tenant, ...).
	Fields []string
	// Source is "keys_file" or "redis".
	Source string
}

// Sources of a KeyChange.
const (
	SourceKeysFile = "keys_file"
	SourceRedis    = "redis"
)

// diffKeys lists what changed from old to cur, ordered by key id. old nil
// means the first load: nothing to report (the configuration record says
// which keys file was loaded).
func diffKeys(old, cur keySet, now time.Time) []KeyChange {
	if old == nil {
		return nil
	}
	var out []KeyChange
	for id, k := range cur {
		o, ok := old[id]
		switch {
		case !ok:
			out = append(out, keyChange(KeyCreated, k.rec, SourceKeysFile, now))
		case o.rec.RevokedAt.IsZero() && !k.rec.RevokedAt.IsZero():
			out = append(out, keyChange(KeyRevoked, k.rec, SourceKeysFile, now))
		default:
			if f := changedFields(o.rec, k.rec); len(f) > 0 {
				c := keyChange(KeyChanged, k.rec, SourceKeysFile, now)
				c.Fields = f
				out = append(out, c)
			}
		}
	}
	for id, o := range old {
		if _, ok := cur[id]; !ok {
			c := keyChange(KeyRemoved, o.rec, SourceKeysFile, now)
			c.Status = ""
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func keyChange(action string, r KeyRecord, source string, now time.Time) KeyChange {
	p := r.Principal
	if p == "" {
		p = r.ID
	}
	return KeyChange{Action: action, ID: r.ID, Principal: p, Roles: slices.Clone(r.Roles), Tenant: r.Tenant,
		Status: r.Status(now), Source: source}
}

// changedFields names the fields of a key record that differ (the hash is
// reported as "secret", never shown).
func changedFields(a, b KeyRecord) []string {
	var f []string
	if a.Principal != b.Principal {
		f = append(f, "principal")
	}
	if !slices.Equal(a.Roles, b.Roles) {
		f = append(f, "roles")
	}
	if a.Tenant != b.Tenant {
		f = append(f, "tenant")
	}
	if a.Hash != b.Hash {
		f = append(f, "secret")
	}
	if !a.ExpiresAt.Equal(b.ExpiresAt) {
		f = append(f, "expires_at")
	}
	if a.Disabled != b.Disabled {
		f = append(f, "disabled")
	}
	if !a.RevokedAt.Equal(b.RevokedAt) {
		f = append(f, "revoked_at") // un-revoked, or the revocation time edited
	}
	return f
}

// announced reports a change another process announced for id in Redis:
// the record is read back to say what it now is (only creation and
// revocation are announced by RedisKeyStore).
func (l *redisLookup) announced(ctx context.Context, id string, now time.Time) {
	if l.onChange == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, max(l.tmo, time.Second))
	defer cancel()
	r, err := l.store.Get(ctx, id)
	switch {
	case errors.Is(err, ErrKeyNotFound):
		l.onChange(KeyChange{Action: KeyRemoved, ID: id, Source: SourceRedis})
	case err != nil:
		// Still recorded: the change happened even if its details are unknown.
		l.onChange(KeyChange{Action: KeyChanged, ID: id, Source: SourceRedis, Status: "unknown"})
	case !r.RevokedAt.IsZero():
		l.onChange(keyChange(KeyRevoked, *r, SourceRedis, now))
	default:
		l.onChange(keyChange(KeyCreated, *r, SourceRedis, now))
	}
}
