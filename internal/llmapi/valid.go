package llmapi

// maxNestingDepth matches encoding/json, so that validJSON and json.Valid
// agree on every input (a fuzz target checks that they do).
const maxNestingDepth = 10000

// validJSON reports whether b is one valid JSON value (surrounded by
// optional whitespace). It accepts exactly what encoding/json.Valid
// accepts — including invalid UTF-8 inside strings, which decoders replace
// with U+FFFD — but runs several times faster, which matters because every
// body and stream event is validated before it is read.
func validJSON(b []byte) bool {
	end, ok := validValue(b, 0)
	return ok && skipWS(b, end) == len(b)
}

// validValue validates the one JSON value that starts at b[i] (after
// optional whitespace) and returns the offset just after it. ok is false
// when the value is invalid or b ends before it does.
func validValue(b []byte, i int) (end int, ok bool) {
	var stackBuf [64]byte
	stack := stackBuf[:0]
	i = skipWS(b, i)
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return 0, false
		}
		switch c := b[i]; c {
		case '{', '[':
			close := byte('}')
			if c == '[' {
				close = ']'
			}
			if len(stack) >= maxNestingDepth {
				return 0, false
			}
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == close {
				i++
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if i = objectKey(b, i); i < 0 {
					return 0, false
				}
			}
			continue
		case '"':
			if i = scanString(b, i); i < 0 {
				return 0, false
			}
		case 't':
			if !hasLiteral(b, i, "true") {
				return 0, false
			}
			i += 4
		case 'f':
			if !hasLiteral(b, i, "false") {
				return 0, false
			}
			i += 5
		case 'n':
			if !hasLiteral(b, i, "null") {
				return 0, false
			}
			i += 4
		default:
			if i = scanNumber(b, i); i < 0 {
				return 0, false
			}
		}
		// A value ended: close containers or move to the next element.
		for {
			if len(stack) == 0 {
				return i, true
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, false
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = skipWS(b, i+1)
				if top == '{' {
					if i = objectKey(b, i); i < 0 {
						return 0, false
					}
				}
				break
			}
			if (top == '{' && b[i] == '}') || (top == '[' && b[i] == ']') {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return 0, false
		}
	}
}

// objectKey scans `"key" :` at b[i] and returns the offset of the value
// after it, or -1.
func objectKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = scanString(b, i); i < 0 {
		return -1
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return skipWS(b, i+1)
}

func hasLiteral(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// scanString validates the string token at b[i] (a '"') and returns the
// offset after it, or -1.
func scanString(b []byte, i int) int {
	for j := i + 1; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			return j + 1
		case c == '\\':
			if j+1 >= len(b) {
				return -1
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if _, ok := hex4(b, j+2); !ok {
					return -1
				}
				j += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			j++
		}
	}
	return -1
}

// scanNumber validates the number at b[i] and returns the offset after it,
// or -1.
func scanNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	return i
}
