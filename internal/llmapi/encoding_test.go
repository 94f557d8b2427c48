package llmapi

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zl(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func rawDeflate(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestDecode(t *testing.T) {
	t.Parallel()
	plain := []byte(strings.Repeat(`{"model":"gpt-4o","messages":[{"role":"user","content":"héllo"}]}`, 50))
	tests := []struct {
		name     string
		encoding string
		body     []byte
		max      int
		want     []byte
		wantErr  error
	}{
		{"identity empty", "", plain, 1 << 20, plain, nil},
		{"identity", "identity", plain, 1 << 20, plain, nil},
		{"identity too large", "", plain, 10, nil, ErrTooLarge},
		{"gzip", "gzip", gz(t, plain), 1 << 20, plain, nil},
		{"x-gzip upper case", " X-GZIP ", gz(t, plain), 1 << 20, plain, nil},
		{"gzip exact max", "gzip", gz(t, plain), len(plain), plain, nil},
		{"gzip one over max", "gzip", gz(t, plain), len(plain) - 1, nil, ErrTooLarge},
		{"gzip empty body", "gzip", gz(t, nil), 10, []byte{}, nil},
		{"gzip multistream", "gzip", append(gz(t, []byte("ab")), gz(t, []byte("cd"))...), 10, []byte("abcd"), nil},
		{"deflate zlib", "deflate", zl(t, plain), 1 << 20, plain, nil},
		{"deflate raw", "deflate", rawDeflate(t, plain), 1 << 20, plain, nil},
		{"deflate then gzip", "deflate, gzip", gz(t, zl(t, plain)), 1 << 20, plain, nil},
		{"default max", "gzip", gz(t, plain), 0, plain, nil},
		{"br", "br", []byte{1, 2, 3}, 100, nil, ErrUnsupportedEncoding},
		{"zstd", "zstd", []byte{1, 2, 3}, 100, nil, ErrUnsupportedEncoding},
		{"unknown", "compress", []byte{1}, 100, nil, ErrUnsupportedEncoding},
		{"gzip then br", "gzip, br", []byte{1}, 100, nil, ErrUnsupportedEncoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode(tt.encoding, tt.body, tt.max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestDecodeCorrupt(t *testing.T) {
	t.Parallel()
	full := gz(t, []byte(strings.Repeat("abc", 1000)))
	tests := []struct {
		name, enc string
		body      []byte
	}{
		{"gzip truncated", "gzip", full[:len(full)/2]},
		{"gzip bad header", "gzip", []byte("not gzip at all")},
		{"gzip bad checksum", "gzip", append(append([]byte{}, full[:len(full)-8]...), 0, 0, 0, 0, 0, 0, 0, 0)},
		{"gzip trailing garbage", "gzip", append(append([]byte{}, full...), "junk"...)},
		{"deflate truncated", "deflate", rawDeflate(t, []byte(strings.Repeat("xyz", 1000)))[:20]},
		{"deflate garbage", "deflate", []byte{0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		if _, err := Decode(tt.enc, tt.body, 1<<20); err == nil {
			t.Errorf("%s: want error", tt.name)
		}
	}
}

// bomb compresses n zero bytes quickly: level 1, fed in pieces.
func bomb(t testing.TB, kind string, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	switch kind {
	case "gzip":
		w, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	case "zlib":
		w, _ = zlib.NewWriterLevel(&buf, zlib.BestSpeed)
	default:
		w, _ = flate.NewWriter(&buf, flate.BestSpeed)
	}
	zeros := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, len(zeros))
		if _, err := w.Write(zeros[:k]); err != nil {
			t.Fatal(err)
		}
		n -= k
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeBombBounded(t *testing.T) {
	const max = 1 << 20
	for _, tc := range []struct {
		enc  string
		body []byte
	}{
		{"gzip", bomb(t, "gzip", 10<<20)},
		{"deflate", bomb(t, "zlib", 10<<20)},
		{"deflate", bomb(t, "raw", 10<<20)},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := Decode(tc.enc, tc.body, max)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: err = %v, want ErrTooLarge", tc.enc, err)
		}
		// Allow max+1 of output plus the decompressor's own state.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > max+256<<10 {
			t.Errorf("%s: allocated %d bytes for a %d byte limit", tc.enc, alloc, max)
		}
	}
}
