package detect

import (
	"strings"
	"testing"
)

// testGreyZone is the shape of the default policy data's grey zone, small.
func testGreyZone(tb testing.TB) *GreyZone {
	tb.Helper()
	gz, err := NewGreyZone(GreyZoneSpec{
		IPRanges: []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
			"fe80::/10", "fc00::/7", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "0.0.0.0"},
		EmailDomains: []string{"example.com", "example.org", "example.net", "test", "invalid", "localhost", ".example"},
		Values: []string{"4242 4242 4242 4242", "GB82 WEST 1234 5698 7654 32",
			"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return gz
}

func TestGreyZoneContainsIP(t *testing.T) {
	t.Parallel()
	gz := testGreyZone(t)
	tests := []struct {
		name, ip string
		want     bool
	}{
		{"loopback v4", "127.0.0.1", true},
		{"loopback v4 high", "127.255.0.9", true},
		{"loopback v6", "::1", true},
		{"private 10", "10.0.0.5", true},
		{"private 172.16/12 low", "172.16.0.1", true},
		{"private 172.16/12 high", "172.31.255.254", true},
		{"outside 172.16/12", "172.32.0.1", false},
		{"private 192.168", "192.168.1.10", true},
		{"link-local", "169.254.169.254", true},
		{"documentation 192.0.2", "192.0.2.10", true},
		{"documentation 198.51.100", "198.51.100.7", true},
		{"documentation 203.0.113", "203.0.113.200", true},
		{"documentation v6", "2001:db8::1", true},
		{"documentation v6 long", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", true},
		{"link-local v6", "fe80::1", true},
		{"link-local v6 with zone", "fe80::1%eth0", true},
		{"unique-local v6", "fd12:3456:789a::1", true},
		{"single address", "0.0.0.0", true},
		{"v4-mapped loopback", "::ffff:127.0.0.1", true},
		{"v4-mapped public", "::ffff:8.8.8.8", false},
		{"public google dns", "8.8.8.8", false},
		{"public", "81.2.69.160", false},
		{"public v6", "2a00:1450:4007:80e::200e", false},
		{"next to documentation range", "192.0.3.1", false},
		{"not an address", "10.0.0", false},
		{"leading zeros", "010.0.0.5", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := gz.ContainsIP(tt.ip); got != tt.want {
				t.Errorf("ContainsIP(%q) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}

func TestGreyZoneContainsDomain(t *testing.T) {
	t.Parallel()
	gz := testGreyZone(t)
	tests := []struct {
		name, domain string
		want         bool
	}{
		{"exact", "example.com", true},
		{"upper case", "EXAMPLE.COM", true},
		{"subdomain", "mail.example.org", true},
		{"trailing dot", "example.net.", true},
		{"tld test", "shop.test", true},
		{"tld invalid", "x.invalid", true},
		{"tld example", "acme.example", true},
		{"tld localhost", "app.localhost", true},
		{"no label boundary", "badexample.com", false},
		{"example.com as a label", "example.com.evil.org", false},
		{"different tld", "example.co", false},
		{"real provider", "gmail.com", false},
		{"test as a label", "test.com", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := gz.ContainsDomain(tt.domain); got != tt.want {
				t.Errorf("ContainsDomain(%q) = %v, want %v", tt.domain, got, tt.want)
			}
		})
	}
}

// TestScanGreyZone runs the whole scanner: findings in the grey zone are
// dropped, every other finding stays, and nothing else changes.
func TestScanGreyZone(t *testing.T) {
	t.Parallel()
	plain, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	grey, err := New(Config{GreyZone: testGreyZone(t)})
	if err != nil {
		t.Fatal(err)
	}
	jwtDemo := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	tests := []struct {
		name string
		text string
		want []string // types of the findings Scan keeps with the grey zone
	}{
		{"loopback", "the server listens on 127.0.0.1 by default", nil},
		{"private", "ports: - \"10.0.0.5:5432:5432\"", nil},
		{"documentation v4", "ping 192.0.2.10 from the bastion", nil},
		{"documentation v6", "the route to 2001:db8::1 is down", nil},
		{"link-local v6", "neighbour fe80::1 on eth0", nil},
		{"public v4", "our resolver is 8.8.8.8 and the office is 81.2.69.160", []string{"IP_ADDRESS", "IP_ADDRESS"}},
		{"mixed ips", "from 192.168.1.10 to 81.2.69.160", []string{"IP_ADDRESS"}},
		{"example e-mail", "send it to alice@example.com please", nil},
		{"example subdomain e-mail", "bob@mail.example.org replied", nil},
		{"test tld e-mail", "login as qa@shop.test", nil},
		{"real e-mail", "write to jane.doe@gmail.com", []string{"EMAIL_ADDRESS"}},
		{"look-alike domain", "write to jane@badexample.com", []string{"EMAIL_ADDRESS"}},
		{"example.com as a label", "write to jane@example.com.evil.org", []string{"EMAIL_ADDRESS"}},
		{"card in an example.com local part", "mail 4556737586899855@example.com now", []string{"CREDIT_CARD"}},
		{"public ip in an example.com local part", "mail 81.2.69.160@example.com now", []string{"IP_ADDRESS"}},
		{"phone in an example.com local part", "call +44 20 7946 0958@example.com now", []string{"PHONE_NUMBER"}},
		{"stripe test card", "use the card 4242 4242 4242 4242 in test mode", nil},
		{"stripe test card dashed", "card 4242-4242-4242-4242 exp 12/34", nil},
		{"stripe test card compact", "card 4242424242424242", nil},
		{"real-looking card", "my card is 4556 7375 8689 9855", []string{"CREDIT_CARD"}},
		{"example iban", "IBAN GB82 WEST 1234 5698 7654 32", nil},
		{"example iban compact lower", "iban gb82west12345698765432", nil},
		{"other iban", "IBAN GB33 BUKB 2020 1555 5555 55", []string{"IBAN_CODE"}},
		{"jwt.io demo token", "Authorization: Bearer " + jwtDemo, nil},
		{"jwt.io demo token bare", "decode this token: " + jwtDemo, nil},
		{"jwt.io demo token altered", "Authorization: Bearer " + strings.Replace(jwtDemo, "Sfl", "Sfm", 1), []string{"AUTHORIZATION_HEADER"}},
		{"jwt.io demo token altered bare", "decode this token: " + strings.Replace(jwtDemo, "Sfl", "Sfm", 1), []string{"JWT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, f := range grey.Scan(tt.text).Findings {
				got = append(got, f.Type)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("with the grey zone: findings %v, want %v", got, tt.want)
			}
			// The case must be meaningful: without the grey zone the
			// detectors find at least as much, and something when the
			// grey zone leaves nothing.
			base := plain.Scan(tt.text)
			if len(base.Findings) < len(tt.want) || len(base.Findings) == 0 {
				t.Errorf("without the grey zone: findings %v, want some (the case tests nothing)", base.Findings)
			}
			if r := grey.Scan(tt.text); r.Length != base.Length || r.PromptInjection.Score != base.PromptInjection.Score {
				t.Errorf("the grey zone changed more than findings: %+v vs %+v", r, base)
			}
		})
	}
}

// TestGreyZoneKeepsHiddenText: characters hidden inside a grey-zone value
// are still reported, though the value itself is exempt.
func TestGreyZoneKeepsHiddenText(t *testing.T) {
	t.Parallel()
	sc, err := New(Config{GreyZone: testGreyZone(t)})
	if err != nil {
		t.Fatal(err)
	}
	res := sc.Scan("IBAN GB82 WE\u200bST 1234 5698 7654 32 (example)")
	var dets []string
	for _, f := range res.Findings {
		dets = append(dets, f.Detector+"/"+f.Type)
	}
	if len(res.Findings) == 0 || !res.Signals().HiddenText.Detected {
		t.Fatalf("findings %v: hidden text inside the example IBAN not reported", dets)
	}
	for _, f := range res.Findings {
		if f.Detector != DetectorHidden {
			t.Errorf("finding %s/%s, want only hidden text (the example IBAN is exempt)", f.Detector, f.Type)
		}
	}
}

func TestNewGreyZoneErrors(t *testing.T) {
	t.Parallel()
	secret := "sk_live_do_not_echo_me"
	tests := []struct {
		name string
		spec GreyZoneSpec
		want string
	}{
		{"bad cidr", GreyZoneSpec{IPRanges: []string{"10.0.0.0/8", "10.0.0.0/33"}}, "ip_ranges[1]"},
		{"not an address", GreyZoneSpec{IPRanges: []string{"localhost"}}, "ip_ranges[0]"},
		{"zone", GreyZoneSpec{IPRanges: []string{"fe80::1%eth0"}}, "ip_ranges[0]"},
		{"domain with @", GreyZoneSpec{EmailDomains: []string{"a@example.com"}}, "email_domains[0]"},
		{"empty domain", GreyZoneSpec{EmailDomains: []string{"."}}, "email_domains[0]"},
		{"empty value", GreyZoneSpec{Values: []string{""}}, "values[0]"},
		{"short value", GreyZoneSpec{Values: []string{"12-34"}}, "values[0]"},
		{"padded value", GreyZoneSpec{Values: []string{" " + secret}}, "values[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewGreyZone(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error echoes the value: %v", err)
			}
		})
	}
}

// TestGreyZoneEmptyExemptsNothing: a nil or empty grey zone is the old
// behaviour.
func TestGreyZoneEmptyExemptsNothing(t *testing.T) {
	t.Parallel()
	empty, err := NewGreyZone(GreyZoneSpec{})
	if err != nil {
		t.Fatal(err)
	}
	f := Finding{Detector: DetectorPII, Type: TypeIPAddress}
	for _, gz := range []*GreyZone{nil, empty} {
		if gz.Exempt(f, "127.0.0.1") || gz.ContainsIP("127.0.0.1") || gz.ContainsDomain("example.com") {
			t.Errorf("%v exempts something", gz)
		}
	}
}

func FuzzGreyZoneExempt(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "fe80::1%eth0", "alice@example.com", "a@b@example.com.", "4242 4242 4242 4242",
		"gb82west12345698765432", "::ffff:10.0.0.1", strings.Repeat("9", 200)} {
		f.Add(s)
	}
	gz := testGreyZone(f)
	f.Fuzz(func(t *testing.T, v string) {
		for _, typ := range []string{TypeIPAddress, TypeEmail, TypeCreditCard, TypeIBAN} {
			ex := gz.Exempt(Finding{Detector: DetectorPII, Type: typ}, v)
			if typ == TypeIPAddress && ex && !gz.ContainsIP(v) {
				var buf [maxCompact]byte
				if c, _ := compactValue(buf[:0], v); len(c) < minValueChars {
					t.Fatalf("%q exempt as an IP address but in no range and no value", v)
				}
			}
		}
		_ = gz.Exempt(Finding{Detector: DetectorSecrets, Type: "JWT"}, v)
		_, _ = NewGreyZone(GreyZoneSpec{IPRanges: []string{v}, EmailDomains: []string{v}, Values: []string{v}})
	})
}

// BenchmarkScanGreyZone: a 1 KiB log excerpt with five grey-zone findings
// and two real ones, scanned without and with the grey zone.
func BenchmarkScanGreyZone(b *testing.B) {
	text := strings.Repeat("GET /health 200 from 127.0.0.1, upstream 10.0.0.5:8080, user alice@example.com paid with 4242 4242 4242 4242; "+
		"peer 2001:db8::1. Alert from 81.2.69.160 for jane.doe@gmail.com. ", 5)
	for _, bc := range []struct {
		name string
		gz   GreyZoneSource
	}{{"none", nil}, {"default", testGreyZone(b)}} {
		b.Run(bc.name, func(b *testing.B) {
			sc, err := New(Config{DisableInjection: true, GreyZone: bc.gz})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				sc.Scan(text)
			}
		})
	}
}

// FuzzScanGreyZone: with a grey zone, Scan returns no exempt finding, and
// every finding Scan makes without it is still covered (overlapped by a
// finding) unless it lies inside the part of an exempt finding the grey zone
// vouches for. A grey-zone value can thus never hide a real one.
func FuzzScanGreyZone(f *testing.F) {
	for _, s := range []string{"mail 4556737586899855@example.com now", "from 192.168.1.10 to 81.2.69.160",
		"card 4242 4242 4242 4242 and 4556 7375 8689 9855", "81.2.69.160@example.com", "call +44 20 7946 0958@example.com",
		"IBAN GB82 WEST 1234 5698 7654 32", "x 10.0.0.5:5432 2001:db8::1 fe80::1%eth0"} {
		f.Add(s)
	}
	gz := testGreyZone(f)
	plain, err := New(Config{DisableInjection: true})
	if err != nil {
		f.Fatal(err)
	}
	grey, err := New(Config{DisableInjection: true, GreyZone: gz})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		got := grey.Scan(text).Findings
		for _, g := range got {
			if gz.Exempt(g, text[g.ByteStart:g.ByteEnd]) {
				t.Fatalf("exempt finding returned: %+v", g)
			}
		}
		all := plain.Scan(text).Findings
		for _, p := range all {
			if p.Detector == DetectorHidden || gz.Exempt(p, text[p.ByteStart:p.ByteEnd]) {
				continue
			}
			covered := false
			for _, g := range got {
				if g.ByteStart < p.ByteEnd && p.ByteStart < g.ByteEnd {
					covered = true
					break
				}
			}
			for _, e := range all {
				if from, ok := gz.vetted(e, text[e.ByteStart:e.ByteEnd]); ok && e.ByteStart+from <= p.ByteStart && p.ByteEnd <= e.ByteEnd {
					covered = true
					break
				}
			}
			if !covered {
				t.Fatalf("finding %+v (%q) hidden by the grey zone; with it: %+v", p, text[p.ByteStart:p.ByteEnd], got)
			}
		}
	})
}
