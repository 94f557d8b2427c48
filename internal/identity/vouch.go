package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"
)

// MinVouchKeyBytes is the shortest key a Voucher accepts: the HMAC-SHA256
// block of security it promises needs 32 bytes of secret.
const MinVouchKeyBytes = 32

// DefaultVouchTTL is how long a sealed principal may be believed after it
// was sealed. ext_proc reads ext_authz's decision right after it is made
// (the same request, microseconds to seconds later), so a short life costs
// nothing and bounds a replay.
const DefaultVouchTTL = 30 * time.Second

// Errors Voucher.Open returns; the metric label and log reason come from
// their text.
var (
	// ErrVouchInvalid: the MAC does not match the fields (forged, altered,
	// or sealed under another key, e.g. by a replica with its own random key).
	ErrVouchInvalid = errors.New("invalid")
	// ErrVouchExpired: the MAC matches but the seal is too old.
	ErrVouchExpired = errors.New("expired")
)

// Vouch is what a decision asserts about a request's principal, for a later
// phase of the same request to believe without authenticating again.
type Vouch struct {
	// DecisionID names the decision that established the principal (and any
	// token reservation it made).
	DecisionID string
	// Principal is who that decision found: ID, Kind, Tenant and Roles are
	// sealed; Claims and Error are not carried.
	Principal Principal
	// ExpiresUnixMs is when the seal stops being believed (Unix milliseconds);
	// Seal sets it.
	ExpiresUnixMs int64
}

// Voucher seals and opens Vouches with HMAC-SHA256 under a key every
// replica of one deployment shares. It exists because the channel a sealed
// principal travels on (Envoy's dynamic metadata, forwarded from ext_authz to
// ext_proc) is, to Bulwark, just bytes on a gRPC stream that anyone able to
// reach the Envoy listener can write: only a MAC Bulwark itself made lets it
// tell its own decision from a forged one. It is safe for concurrent use.
type Voucher struct {
	key   []byte
	ttl   time.Duration
	clock Clock
	// macs reuses HMAC states (*vouchMAC): one Seal or Open per request on
	// the hot path.
	macs sync.Pool
}

// NewVoucher returns a Voucher keyed with key (at least MinVouchKeyBytes),
// whose seals last ttl (DefaultVouchTTL when zero). clock may be nil (the
// system clock).
func NewVoucher(key []byte, ttl time.Duration, clock Clock) (*Voucher, error) {
	if len(key) < MinVouchKeyBytes {
		return nil, fmt.Errorf("identity: metadata key must be at least %d bytes, got %d", MinVouchKeyBytes, len(key))
	}
	if ttl < 0 {
		return nil, fmt.Errorf("identity: metadata seal lifetime %v must not be negative", ttl)
	}
	if ttl == 0 {
		ttl = DefaultVouchTTL
	}
	if clock == nil {
		clock = systemClock{}
	}
	k := append([]byte(nil), key...)
	v := &Voucher{key: k, ttl: ttl, clock: clock}
	v.macs.New = func() any { return &vouchMAC{h: hmac.New(sha256.New, k), buf: make([]byte, 0, 256)} }
	return v, nil
}

// RandomVouchKey is a fresh key for a Voucher that only this process uses:
// seals from another replica then fail to open, and the request's own
// credentials are checked again, which is safe but not free.
func RandomVouchKey() []byte {
	k := make([]byte, MinVouchKeyBytes)
	_, _ = rand.Read(k) // crypto/rand.Read never fails
	return k
}

// Seal sets v.ExpiresUnixMs and returns the MAC over every field of v.
func (vc *Voucher) Seal(v *Vouch) []byte {
	v.ExpiresUnixMs = vc.clock.Now().Add(vc.ttl).UnixMilli()
	return vc.mac(v, nil)
}

// Open reports whether mac was made by Seal over exactly v's fields with this
// key (ErrVouchInvalid otherwise, compared in constant time) and v has not
// expired (ErrVouchExpired).
func (vc *Voucher) Open(v *Vouch, mac []byte) error {
	var buf [sha256.Size]byte
	if !hmac.Equal(vc.mac(v, buf[:0]), mac) {
		return ErrVouchInvalid
	}
	if vc.clock.Now().UnixMilli() >= v.ExpiresUnixMs {
		return ErrVouchExpired
	}
	return nil
}

// mac appends the HMAC of v's canonical encoding to dst: a domain tag, then
// each string length-prefixed (so no two field lists encode alike), the
// role count, and the expiry as 8 big-endian bytes.
func (vc *Voucher) mac(v *Vouch, dst []byte) []byte {
	st := vc.macs.Get().(*vouchMAC)
	b := st.buf[:0]
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str("bulwark.authz.v1")
	str(v.DecisionID)
	p := &v.Principal
	str(p.ID)
	str(string(p.Kind))
	str(p.Tenant)
	b = binary.AppendUvarint(b, uint64(len(p.Roles)))
	for _, r := range p.Roles {
		str(r)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(v.ExpiresUnixMs)) // #nosec G115 -- a bit pattern, not arithmetic
	st.h.Reset()
	st.h.Write(b)
	out := st.h.Sum(dst)
	if cap(b) <= 4096 { // keep ordinary buffers, not one grown by a huge role list
		st.buf = b
		vc.macs.Put(st)
	}
	return out
}

// vouchMAC is one reusable HMAC and encoding buffer.
type vouchMAC struct {
	h   hash.Hash
	buf []byte
}
