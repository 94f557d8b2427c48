package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

const keysUsageText = `usage: bulwark keys <command> [flags]

commands:
  create --id ID --roles r1,r2 [--tenant T] [--principal P] [--expires 720h|90d|RFC3339]
         (--keys-file F | --redis-url URL) [--pepper-file F|-]
         prints the new key once on stdout; only its HMAC is stored
  revoke --id ID (--keys-file F | --redis-url URL)
  list   (--keys-file F | --redis-url URL) [--json]     never prints secrets or hashes

The pepper comes from --pepper-file (- reads stdin) or BULWARK_KEY_PEPPER.
--keys-file and --redis-url default to BULWARK_KEYS_FILE and BULWARK_REDIS_URL.
`

// keysOptions are the flags shared by the keys subcommands.
type keysOptions struct {
	keysFile, redisURL, redisPrefix string
	id, roles, tenant, principal    string
	expires, pepperFile             string
	asJSON                          bool
}

// runKeys implements `bulwark keys create|revoke|list`. It writes the new key
// (create) and listings to stdout, notes to stderr, and returns an error
// for main to report; it never prints a stored hash.
func runKeys(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, keysUsageText)
		if len(args) == 0 {
			return errors.New("keys: missing command (create, revoke, list)")
		}
		return nil
	}
	cmd := args[0]
	fs := flag.NewFlagSet("bulwark keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsageText) }
	var o keysOptions
	fs.StringVar(&o.keysFile, "keys-file", os.Getenv("BULWARK_KEYS_FILE"), "API keys file (YAML)")
	fs.StringVar(&o.redisURL, "redis-url", os.Getenv("BULWARK_REDIS_URL"), "Redis URL (comma-separated addresses for a Cluster)")
	fs.StringVar(&o.redisPrefix, "redis-key-prefix", "bulwark:", "prefix of Bulwark's Redis keys")
	switch cmd {
	case "create":
		fs.StringVar(&o.id, "id", "", "key id (letters, digits, '-')")
		fs.StringVar(&o.roles, "roles", "", "comma-separated roles")
		fs.StringVar(&o.tenant, "tenant", "", "tenant")
		fs.StringVar(&o.principal, "principal", "", "principal id (default: the key id)")
		fs.StringVar(&o.expires, "expires", "", "lifetime (720h, 90d) or RFC 3339 time")
		fs.StringVar(&o.pepperFile, "pepper-file", "", "pepper file, - for stdin (default: $BULWARK_KEY_PEPPER)")
	case "revoke":
		fs.StringVar(&o.id, "id", "", "key id")
	case "list":
		fs.BoolVar(&o.asJSON, "json", false, "print JSON lines")
	default:
		fmt.Fprint(stderr, keysUsageText)
		return fmt.Errorf("keys: unknown command %q (want create, revoke, list)", cmd)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("keys %s: %w", cmd, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keys %s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if o.keysFile == "" && o.redisURL == "" {
		return fmt.Errorf("keys %s: need --keys-file or --redis-url", cmd)
	}
	var store *identity.RedisKeyStore
	if o.redisURL != "" {
		rdb, err := ratelimit.NewRedisClient(o.redisURL, "", 5*time.Second)
		if err != nil {
			return fmt.Errorf("keys %s: --redis-url: %w", cmd, err)
		}
		defer rdb.Close()
		store = identity.NewRedisKeyStore(rdb, o.redisPrefix)
	}
	switch cmd {
	case "create":
		return keysCreate(ctx, o, store, stdin, stdout, stderr)
	case "revoke":
		return keysRevoke(ctx, o, store, stdout)
	default:
		return keysList(ctx, o, store, stdout)
	}
}

func keysCreate(ctx context.Context, o keysOptions, store *identity.RedisKeyStore, stdin io.Reader, stdout, stderr io.Writer) error {
	if o.id == "" {
		return errors.New("keys create: --id is required")
	}
	roles, err := keysSplitRoles(o.roles)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	var expires time.Time
	if o.expires != "" {
		if expires, err = keysParseExpires(o.expires, now); err != nil {
			return err
		}
	}
	pepper, err := keysPepper(o.pepperFile, stdin)
	if err != nil {
		return err
	}
	key, err := identity.NewAPIKey(nil, o.id)
	if err != nil {
		return fmt.Errorf("keys create: --id: %w", err)
	}
	rec := identity.KeyRecord{
		ID: o.id, Principal: o.principal, Roles: roles, Tenant: o.tenant,
		Hash: identity.HashAPIKey(pepper, key), CreatedAt: now, ExpiresAt: expires,
	}
	createInRedis := func() error {
		if store == nil {
			return nil
		}
		return store.Create(ctx, rec)
	}
	if o.keysFile == "" {
		if err := createInRedis(); err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
	} else {
		// Under the keys file's lock, so no other writer (another `keys`
		// command, a server's RevokeKey) can change the file in between.
		err := identity.UpdateKeysFile(ctx, o.keysFile, func(kf *identity.KeysFile) error {
			if kf.Find(o.id) != nil {
				return fmt.Errorf("key %q already exists in %s", o.id, o.keysFile)
			}
			if err := createInRedis(); err != nil {
				return err
			}
			kf.Keys = append(kf.Keys, rec)
			return nil
		})
		if err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
	}
	fmt.Fprintln(stdout, key)
	fmt.Fprintf(stderr, "created API key %q (roles %s); it is shown only this once\n", o.id, strings.Join(roles, ","))
	return nil
}

func keysRevoke(ctx context.Context, o keysOptions, store *identity.RedisKeyStore, stdout io.Writer) error {
	if o.id == "" {
		return errors.New("keys revoke: --id is required")
	}
	now := time.Now().UTC().Truncate(time.Second)
	found := false
	if o.keysFile != "" {
		rec, _, err := identity.RevokeInKeysFile(ctx, o.keysFile, o.id, now, nil)
		if err != nil {
			return fmt.Errorf("keys revoke: %w", err)
		}
		found = rec != nil
	}
	if store != nil {
		_, err := store.Revoke(ctx, o.id, now, nil)
		switch {
		case err == nil:
			found = true
		case !errors.Is(err, identity.ErrKeyNotFound):
			return fmt.Errorf("keys revoke: %w", err)
		}
	}
	if !found {
		return fmt.Errorf("keys revoke: no key %q", o.id)
	}
	fmt.Fprintf(stdout, "revoked %s\n", o.id)
	return nil
}

// keysListed is what list shows of a record: everything but the hash.
type keysListed struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal,omitempty"`
	Roles     []string  `json:"roles"`
	Tenant    string    `json:"tenant,omitempty"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Source    string    `json:"source"`
}

func keysList(ctx context.Context, o keysOptions, store *identity.RedisKeyStore, stdout io.Writer) error {
	now := time.Now()
	var out []keysListed
	add := func(src string, recs []identity.KeyRecord) {
		for _, r := range recs {
			out = append(out, keysListed{
				ID: r.ID, Principal: r.Principal, Roles: r.Roles, Tenant: r.Tenant, Status: r.Status(now),
				CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, RevokedAt: r.RevokedAt, Source: src,
			})
		}
	}
	if o.keysFile != "" {
		kf, err := identity.ReadKeysFile(o.keysFile)
		if err != nil {
			return fmt.Errorf("keys list: %w", err)
		}
		add("file", kf.Keys)
	}
	if store != nil {
		recs, err := store.List(ctx)
		if err != nil {
			return fmt.Errorf("keys list: %w", err)
		}
		add("redis", recs)
	}
	slices.SortStableFunc(out, func(a, b keysListed) int { return strings.Compare(a.ID, b.ID) })
	if o.asJSON {
		enc := json.NewEncoder(stdout)
		for _, l := range out {
			if l.Roles == nil {
				l.Roles = []string{}
			}
			if err := enc.Encode(l); err != nil {
				return fmt.Errorf("keys list: %w", err)
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPRINCIPAL\tROLES\tTENANT\tSTATUS\tEXPIRES\tSOURCE")
	for _, l := range out {
		exp := "-"
		if !l.ExpiresAt.IsZero() {
			exp = l.ExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, keysDash(l.Principal), keysDash(strings.Join(l.Roles, ",")), keysDash(l.Tenant), l.Status, exp, l.Source)
	}
	return tw.Flush()
}

func keysDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func keysSplitRoles(s string) ([]string, error) {
	var roles []string
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if strings.ContainsAny(r, " \t\"'") {
			return nil, fmt.Errorf("keys create: --roles: invalid role %q", r)
		}
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	if len(roles) == 0 {
		return nil, errors.New("keys create: --roles is required (comma-separated)")
	}
	return roles, nil
}

// keysParseExpires accepts a Go duration, a number of days ("90d") or an
// RFC 3339 time, and insists on the future.
func keysParseExpires(s string, now time.Time) (time.Time, error) {
	var t time.Time
	if d, err := time.ParseDuration(s); err == nil {
		t = now.Add(d)
	} else if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || fmt.Sprint(days) != n {
			return t, fmt.Errorf("keys create: --expires %q: want a duration (720h, 90d) or an RFC 3339 time", s)
		}
		t = now.AddDate(0, 0, days)
	} else if t, err = time.Parse(time.RFC3339, s); err != nil {
		return t, fmt.Errorf("keys create: --expires %q: want a duration (720h, 90d) or an RFC 3339 time", s)
	}
	if !t.After(now) {
		return t, fmt.Errorf("keys create: --expires %q is not in the future", s)
	}
	return t.UTC(), nil
}

func keysPepper(file string, stdin io.Reader) ([]byte, error) {
	switch {
	case file == "-":
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("keys create: read pepper from stdin: %w", err)
		}
		p, err := identity.LoadPepper("", line)
		if err != nil {
			return nil, fmt.Errorf("keys create: %w", err)
		}
		return p, nil
	case file != "":
		p, err := identity.LoadPepper(file, "")
		if err != nil {
			return nil, fmt.Errorf("keys create: --pepper-file: %w", err)
		}
		return p, nil
	}
	env := os.Getenv("BULWARK_KEY_PEPPER")
	if env == "" {
		return nil, errors.New("keys create: no pepper: set --pepper-file or BULWARK_KEY_PEPPER (the server must use the same one)")
	}
	p, err := identity.LoadPepper("", env)
	if err != nil {
		return nil, fmt.Errorf("keys create: BULWARK_KEY_PEPPER: %w", err)
	}
	return p, nil
}
