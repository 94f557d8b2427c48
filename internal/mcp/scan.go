package mcp

import (
	"encoding/json"
	"errors"
	"fmt"
)

// A scanner over JSON already checked as valid (a Response's Result, which
// ParseResponse decoded): tools/list answers hold hundreds of definitions
// and are filtered on the answer's path, so after that one validating
// decode the listing is split, and each definition compacted, in single
// passes that only find the boundaries. On bytes that are not valid JSON
// the helpers return an error or a wrong split, never panic.

var errTruncated = errors.New("truncated JSON")

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string literal at b[i] ('"').
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errTruncated
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errTruncated
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errTruncated
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j, nil
		}
		j++
	}
	return j, nil
}

// eachMember calls fn with each key and raw value of the object b.
func eachMember(b []byte, fn func(key string, val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("not an object")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return errors.New("object key is not a string")
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := string(b[i+1 : end-1])
		for _, c := range b[i+1 : end-1] {
			if c == '\\' || c >= 0x80 { // escapes, and invalid UTF-8 read as U+FFFD
				if err := json.Unmarshal(b[i:end], &key); err != nil {
					return fmt.Errorf("object key: %w", err)
				}
				break
			}
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return errors.New("missing ':' after an object key")
		}
		start := skipWS(b, i+1)
		if end, err = skipValue(b, start); err != nil {
			return err
		}
		if err := fn(key, b[start:end]); err != nil {
			return err
		}
		i = skipWS(b, end)
		switch {
		case i >= len(b):
			return errTruncated
		case b[i] == '}':
			return nil
		case b[i] != ',':
			return errors.New("missing ',' between object members")
		}
		i = skipWS(b, i+1)
	}
	return errTruncated
}

// eachElement calls fn with each raw element of the array b.
func eachElement(b []byte, fn func(val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return errors.New("not an array")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for i < len(b) {
		end, err := skipValue(b, i)
		if err != nil {
			return err
		}
		if end == i {
			return errors.New("missing array element")
		}
		if err := fn(b[i:end]); err != nil {
			return err
		}
		i = skipWS(b, end)
		switch {
		case i >= len(b):
			return errTruncated
		case b[i] == ']':
			return nil
		case b[i] != ',':
			return errors.New("missing ',' between array elements")
		}
		i = skipWS(b, i+1)
	}
	return errTruncated
}

// compactValid appends b without the whitespace outside its strings (what
// json.Compact writes, for valid JSON).
func compactValid(dst, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r':
		case '"':
			end, err := skipString(b, i)
			if err != nil {
				return append(dst, b[i:]...)
			}
			dst = append(dst, b[i:end]...)
			i = end - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
