package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/aead/subtle"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/prf"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/bulwark-ai/bulwark/internal/filelock"
)

// KEKEnv names the environment variable holding the local key-encryption
// key: base64 of 32 random bytes.
const KEKEnv = "BULWARK_AUDIT_KEK"

// KEK is a key-encryption key: it wraps the audit keyset and never touches a
// record. It is a tink.AEAD because that is what Tink's KMS clients hand out
// (registry.KMSClient.GetAEAD), so a key held in a KMS plugs in here with
// its URI as ID; LoadKEK provides the local one.
type KEK interface {
	tink.AEAD
	// ID names the key without revealing it, so an error can say which
	// key-encryption key a keyset expects and which one was given.
	ID() string
}

type localKEK struct {
	tink.AEAD
	id string
}

func (k localKEK) ID() string { return k.id }

// NewLocalKEK makes a KEK of 32 raw bytes (AES-256-GCM through Tink).
func NewLocalKEK(raw []byte) (KEK, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("audit: key-encryption key: want 32 bytes, got %d", len(raw))
	}
	a, err := subtle.NewAESGCM(raw)
	if err != nil {
		return nil, fmt.Errorf("audit: key-encryption key: %w", err)
	}
	sum := sha256.Sum256(append([]byte("bulwark-audit-kek-id/v1 "), raw...))
	return localKEK{AEAD: a, id: "local:" + hex.EncodeToString(sum[:8])}, nil
}

// LoadKEK reads the local key-encryption key from file (its content: base64
// of 32 bytes) or, with no file, from $BULWARK_AUDIT_KEK.
func LoadKEK(file string) (KEK, error) {
	src, text := KEKEnv, os.Getenv(KEKEnv)
	if file != "" {
		b, err := os.ReadFile(file) // #nosec G304 -- operator-named key file
		if err != nil {
			return nil, fmt.Errorf("audit: key-encryption key: %w", err)
		}
		src, text = file, string(b)
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, fmt.Errorf("audit: no key-encryption key: set %s (base64 of 32 random bytes) or give --kek-file", KEKEnv)
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("audit: key-encryption key in %s is not base64: %w", src, err)
	}
	return NewLocalKEK(raw)
}

// keysetFormat marks a keyset file; the deployment id and this format are
// the associated data of every wrapped part, so parts cannot be swapped
// between deployments unseen.
const keysetFormat = "bulwark-audit-keyset/v1"

// keysetFile is the keyset as stored: Tink keysets encrypted by the KEK.
type keysetFile struct {
	Format     string `json:"format"`
	Deployment string `json:"deployment"`
	KEK        string `json:"kek"`
	// Data is the AEAD keyset that encrypts records (rotated by adding a
	// primary key); Pseudonym the PRF keyset that names subjects (never
	// rotated, so pseudonyms stay stable).
	Data      []byte `json:"data"`
	Pseudonym []byte `json:"pseudonym"`
}

// Keys is an opened audit keyset: what the writer encrypts with and what
// `audit read` decrypts with.
type Keys struct {
	Path       string
	Deployment string
	KEKID      string
	// Primary is the key id new records are encrypted under; IDs are all
	// the key ids the keyset holds.
	Primary uint32
	IDs     map[uint32]bool
	data    *keyset.Handle
	aead    tink.AEAD
	pseud   *prf.Set
	kek     KEK
}

func (f *keysetFile) ad(part string) []byte {
	return []byte(keysetFormat + " " + part + " " + f.Deployment)
}

func wrapHandle(h *keyset.Handle, kek KEK, ad []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kek, ad); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func unwrapHandle(b []byte, kek KEK, ad []byte) (*keyset.Handle, error) {
	return keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(b)), kek, ad)
}

// CreateKeyset writes a new keyset at path (refusing to replace one: that
// would make every record written under it unreadable).
func CreateKeyset(path string, kek KEK) (*Keys, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("audit keygen: %s exists; rotate it with `bulwark audit rotate` instead", path)
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("audit keygen: %w", err)
	}
	f := &keysetFile{Format: keysetFormat, Deployment: hex.EncodeToString(id), KEK: kek.ID()}
	data, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("audit keygen: %w", err)
	}
	ps, err := keyset.NewHandle(prf.HMACSHA256PRFKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("audit keygen: %w", err)
	}
	if f.Data, err = wrapHandle(data, kek, f.ad("data")); err != nil {
		return nil, fmt.Errorf("audit keygen: wrap: %w", err)
	}
	if f.Pseudonym, err = wrapHandle(ps, kek, f.ad("pseudonym")); err != nil {
		return nil, fmt.Errorf("audit keygen: wrap: %w", err)
	}
	if err := writeKeysetFile(path, f); err != nil {
		return nil, err
	}
	return OpenKeyset(path, kek)
}

func writeKeysetFile(path string, f *keysetFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("audit keyset: %w", err)
	}
	return writeAtomic(path, append(b, '\n'), 0o600)
}

// writeAtomic replaces path with b (temporary file, fsync, rename).
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name()) // best effort; the write error is the one to report
		return fmt.Errorf("audit: write %s: %w", path, err)
	}
	return nil
}

func readKeysetFile(path string) (*keysetFile, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- operator-named keyset
	if err != nil {
		return nil, fmt.Errorf("audit keyset: %w", err)
	}
	var f keysetFile
	if err := json.Unmarshal(b, &f); err != nil || f.Format != keysetFormat {
		return nil, fmt.Errorf("audit keyset %s: not a Bulwark audit keyset (%s)", path, keysetFormat)
	}
	return &f, nil
}

// OpenKeyset reads the keyset at path and unwraps it with kek.
func OpenKeyset(path string, kek KEK) (*Keys, error) {
	f, err := readKeysetFile(path)
	if err != nil {
		return nil, err
	}
	data, err := unwrapHandle(f.Data, kek, f.ad("data"))
	if err != nil {
		if f.KEK != kek.ID() {
			return nil, fmt.Errorf("audit keyset %s (deployment %s): wrapped by key-encryption key %s, given %s: wrong key-encryption key", path, f.Deployment, f.KEK, kek.ID())
		}
		return nil, fmt.Errorf("audit keyset %s (deployment %s): cannot unwrap with key-encryption key %s (altered keyset?): %w", path, f.Deployment, kek.ID(), err)
	}
	ps, err := unwrapHandle(f.Pseudonym, kek, f.ad("pseudonym"))
	if err != nil {
		return nil, fmt.Errorf("audit keyset %s: cannot unwrap its pseudonym key: %w", path, err)
	}
	k := &Keys{Path: path, Deployment: f.Deployment, KEKID: kek.ID(), data: data, kek: kek, IDs: map[uint32]bool{}}
	if k.aead, err = aead.New(data); err != nil {
		return nil, fmt.Errorf("audit keyset %s: %w", path, err)
	}
	if k.pseud, err = prf.NewPRFSet(ps); err != nil {
		return nil, fmt.Errorf("audit keyset %s: %w", path, err)
	}
	info := data.KeysetInfo()
	k.Primary = info.GetPrimaryKeyId()
	for _, ki := range info.GetKeyInfo() {
		k.IDs[ki.GetKeyId()] = true
	}
	return k, nil
}

// Pseudonym is the keyed, stable pseudonym of a principal id (safe for
// concurrent use: the pipeline calls it per decision): the same id
// always maps to the same value under one keyset, and without the keyset
// the id cannot be recovered or guessed.
func (k *Keys) Pseudonym(id string) string {
	out, err := k.pseud.ComputePrimaryPRF([]byte("principal:"+id), 16)
	if err != nil { // cannot happen with the HMAC PRF and 16 bytes
		return "?"
	}
	return hex.EncodeToString(out)
}

// RotateKeyset adds a fresh AES-256-GCM key to the keyset at path and makes
// it the primary: new records are encrypted under it, older ones stay
// readable under their own key id. It returns the new key id.
func RotateKeyset(ctx context.Context, path string, kek KEK) (uint32, error) {
	unlock, err := lockKeyset(ctx, path)
	if err != nil {
		return 0, err
	}
	defer unlock()
	f, err := readKeysetFile(path)
	if err != nil {
		return 0, err
	}
	k, err := OpenKeyset(path, kek)
	if err != nil {
		return 0, err
	}
	m := keyset.NewManagerFromHandle(k.data)
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err == nil {
		err = m.SetPrimary(id)
	}
	h, herr := m.Handle()
	if err == nil {
		err = herr
	}
	if err == nil {
		f.Data, err = wrapHandle(h, kek, f.ad("data"))
	}
	if err != nil {
		return 0, fmt.Errorf("audit rotate: %w", err)
	}
	return id, writeKeysetFile(path, f)
}

// RewrapKeyset wraps the keyset at path under a new key-encryption key
// (KEK rotation). No record changes: the keys that encrypt them are the
// same, only their wrapping is.
func RewrapKeyset(ctx context.Context, path string, oldKEK, newKEK KEK) error {
	unlock, err := lockKeyset(ctx, path)
	if err != nil {
		return err
	}
	defer unlock()
	f, err := readKeysetFile(path)
	if err != nil {
		return err
	}
	k, err := OpenKeyset(path, oldKEK)
	if err != nil {
		return err
	}
	ps, err := unwrapHandle(f.Pseudonym, oldKEK, f.ad("pseudonym"))
	if err != nil {
		return fmt.Errorf("audit rewrap: %w", err)
	}
	if f.Data, err = wrapHandle(k.data, newKEK, f.ad("data")); err != nil {
		return fmt.Errorf("audit rewrap: %w", err)
	}
	if f.Pseudonym, err = wrapHandle(ps, newKEK, f.ad("pseudonym")); err != nil {
		return fmt.Errorf("audit rewrap: %w", err)
	}
	f.KEK = newKEK.ID()
	return writeKeysetFile(path, f)
}

// lockKeyset takes the keyset's lock (KEYSET.lock), waiting up to 5 s or
// ctx: every change to the keyset, its subject keys and its event queue
// happens under it, from the server and the CLI alike.
func lockKeyset(ctx context.Context, path string) (func(), error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600) // #nosec G304 -- beside the operator-named keyset
	if err != nil {
		return nil, fmt.Errorf("audit keyset: lock: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		ok, err := filelock.TryLock(f)
		if ok {
			return func() { _ = f.Close() }, nil // closing releases the flock
		}
		if err == nil {
			select {
			case <-ctx.Done():
				err = errors.New("held by another process")
			case <-time.After(10 * time.Millisecond):
				continue
			}
		}
		_ = f.Close() // the lock error is the one to report
		return nil, fmt.Errorf("audit keyset: lock %s: %w", name, err)
	}
}
