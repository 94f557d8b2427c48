package identity

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

func TestVoucher(t *testing.T) {
	t.Parallel()
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	key := bytes.Repeat([]byte("k"), MinVouchKeyBytes)
	v, err := NewVoucher(key, 30*time.Second, clock)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewVoucher(bytes.Repeat([]byte("o"), MinVouchKeyBytes), 30*time.Second, clock)
	if err != nil {
		t.Fatal(err)
	}
	base := func() Vouch {
		return Vouch{DecisionID: "d-1", Principal: Principal{ID: "app", Kind: KindAPIKey, Tenant: "acme", Roles: []string{"user", "ops"}}}
	}
	sealed := base()
	mac := v.Seal(&sealed)
	if got, want := sealed.ExpiresUnixMs, clock.Now().Add(30*time.Second).UnixMilli(); got != want {
		t.Fatalf("expiry %d, want %d", got, want)
	}
	cases := []struct {
		name    string
		change  func(*Vouch)
		voucher *Voucher
		after   time.Duration
		want    error
	}{
		{"as sealed", func(*Vouch) {}, v, 0, nil},
		{"just before expiry", func(*Vouch) {}, v, 30*time.Second - time.Millisecond, nil},
		{"at expiry", func(*Vouch) {}, v, 30 * time.Second, ErrVouchExpired},
		{"another key", func(*Vouch) {}, other, 0, ErrVouchInvalid},
		{"decision id", func(x *Vouch) { x.DecisionID = "d-2" }, v, 0, ErrVouchInvalid},
		{"principal id", func(x *Vouch) { x.Principal.ID = "admin" }, v, 0, ErrVouchInvalid},
		{"kind", func(x *Vouch) { x.Principal.Kind = KindMTLS }, v, 0, ErrVouchInvalid},
		{"tenant", func(x *Vouch) { x.Principal.Tenant = "beta" }, v, 0, ErrVouchInvalid},
		{"role added", func(x *Vouch) { x.Principal.Roles = []string{"user", "ops", "admin"} }, v, 0, ErrVouchInvalid},
		{"roles joined", func(x *Vouch) { x.Principal.Roles = []string{"userops"} }, v, 0, ErrVouchInvalid},
		{"role moved into tenant", func(x *Vouch) { x.Principal.Tenant, x.Principal.Roles = "acmeuser", []string{"ops"} }, v, 0, ErrVouchInvalid},
		{"expiry extended", func(x *Vouch) { x.ExpiresUnixMs += 3_600_000 }, v, 0, ErrVouchInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sealed
			got.Principal.Roles = append([]string(nil), sealed.Principal.Roles...)
			tc.change(&got)
			vc, err := NewVoucher(tc.voucher.key, 30*time.Second, fakeclock.New(clock.Now().Add(tc.after)))
			if err != nil {
				t.Fatal(err)
			}
			if err := vc.Open(&got, mac); !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
	if err := v.Open(&sealed, mac[:len(mac)-1]); !errors.Is(err, ErrVouchInvalid) {
		t.Fatalf("truncated MAC: %v", err)
	}
	if _, err := NewVoucher(key[:MinVouchKeyBytes-1], 0, nil); err == nil {
		t.Fatal("a short key was accepted")
	}
}
