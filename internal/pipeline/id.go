package pipeline

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"io"
	"sync"
)

// IDSource hands out random (version 4) UUIDs for decision ids. It reads
// crypto/rand in blocks instead of once per id, which keeps a system call
// off the hot path; ids stay unpredictable.
type IDSource struct {
	mu sync.Mutex
	r  *bufio.Reader
}

// NewIDSource returns a ready IDSource.
func NewIDSource() *IDSource {
	return &IDSource{r: bufio.NewReaderSize(rand.Reader, 16*256)}
}

// New returns a new UUID in its canonical 36-character form.
func (s *IDSource) New() string {
	var u [16]byte
	s.mu.Lock()
	_, err := io.ReadFull(s.r, u[:])
	s.mu.Unlock()
	if err != nil {
		// crypto/rand.Read is documented never to fail on supported platforms;
		// fall back to it directly rather than hand out a weak id.
		_, _ = rand.Read(u[:])
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
