package llmapi

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// DefaultMaxDecoded bounds Decode's output when max <= 0.
const DefaultMaxDecoded = 32 << 20

// Decode undoes a Content-Encoding so that policy can read compressed
// bodies: "" and "identity" return body unchanged; "gzip", "x-gzip" and
// "deflate" (zlib-wrapped, as HTTP specifies, or raw deflate, as some
// servers send) are decompressed; a list such as "deflate, gzip" is undone
// from the last coding to the first. "br", "zstd" and anything else yield
// ErrUnsupportedEncoding, so that the caller can fail closed or pass the
// body through unread.
//
// The output is bounded by max bytes (DefaultMaxDecoded when max <= 0):
// beyond it Decode returns ErrTooLarge having allocated at most max bytes
// plus small buffers, so a decompression bomb costs nothing.
func Decode(encoding string, body []byte, max int) ([]byte, error) {
	limit := max
	if limit <= 0 {
		limit = DefaultMaxDecoded
	}
	codings := strings.Split(encoding, ",")
	out := body
	for i := len(codings) - 1; i >= 0; i-- {
		c := strings.ToLower(strings.TrimSpace(codings[i]))
		var err error
		switch c {
		case "", "identity":
			continue
		case "gzip", "x-gzip":
			out, err = gunzip(out, limit)
		case "deflate":
			out, err = inflate(out, limit)
		default:
			return nil, fmt.Errorf("decode %q: %w", c, ErrUnsupportedEncoding)
		}
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", c, err)
		}
	}
	if len(out) > limit {
		return nil, fmt.Errorf("decode identity: %d bytes: %w", len(out), ErrTooLarge)
	}
	return out, nil
}

func gunzip(body []byte, limit int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	// ISIZE (the last four bytes) is the uncompressed size of a single
	// member modulo 2^32: a good first guess that a liar cannot use to
	// exceed max.
	// DEFLATE cannot expand more than about 1032:1, which caps a lie.
	hint := 0
	if len(body) >= 4 {
		hint = int(binary.LittleEndian.Uint32(body[len(body)-4:])) + 1
		hint = min(hint, 1032*len(body)+512)
	}
	return readBounded(zr, limit, hint)
}

func inflate(body []byte, limit int) ([]byte, error) {
	if isZlib(body) {
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err == nil {
			defer zr.Close()
			return readBounded(zr, limit, 4*len(body)+512)
		}
	}
	fr := flate.NewReader(bytes.NewReader(body))
	defer fr.Close()
	return readBounded(fr, limit, 4*len(body)+512)
}

// isZlib reports whether body starts with a zlib header (RFC 1950):
// method 8, a window of at most 32 KiB and a valid check.
func isZlib(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// readBounded reads r to the end into a buffer of at most limit bytes. It
// first fills one buffer of the hinted size (usually the whole output, so
// nothing is copied), then collects further output in chunks, never
// holding more than limit+1 bytes of output before giving up.
func readBounded(r io.Reader, limit, hint int) ([]byte, error) {
	capBytes := limit + 1 // one byte more than limit detects overflow
	first := make([]byte, min(max(hint, 512), capBytes))
	n, err := fill(r, first)
	if err == io.EOF {
		return first[:n], nil
	}
	if err != nil {
		return nil, err
	}
	chunks := [][]byte{first}
	total := n
	for size := max(len(first), 32<<10); ; size = min(size*2, 4<<20) {
		if total >= capBytes {
			return nil, ErrTooLarge
		}
		c := make([]byte, min(size, capBytes-total))
		n, err := fill(r, c)
		total += n
		chunks = append(chunks, c[:n])
		if err == io.EOF {
			if total > limit {
				return nil, ErrTooLarge
			}
			return bytes.Join(chunks, nil), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// fill reads into buf until it is full or r fails. Unlike io.ReadFull it
// passes io.EOF through and keeps a decompressor's io.ErrUnexpectedEOF (a
// truncated stream) distinct from a clean end.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
