package ratelimit

import "fmt"

// Code is a stable, machine-readable error code. It doubles as the metric
// label and the reason the pipeline writes into a 503 body and audit record.
type Code string

const (
	// CodeUnavailable: Redis could not answer in time (or the breaker is open)
	// and a limit of the request fails closed. The pipeline answers 503.
	CodeUnavailable Code = "ratelimit_unavailable"
	// CodeInvalidLimit: a limit is malformed (no name, non-positive limit or
	// period, negative cost, a bad hash tag, or limits of one request in
	// different hash tags). A policy bug: the pipeline must not allow silently.
	CodeInvalidLimit Code = "ratelimit_invalid_limit"
	// CodeUnknownReservation: Reconcile was called for a decision id with no
	// live reservation on this replica (never reserved, or expired).
	CodeUnknownReservation Code = "ratelimit_unknown_reservation"
	// CodeClosed: the Limiter was closed.
	CodeClosed Code = "ratelimit_closed"
)

// Error is the typed error of this package. Match with errors.Is against the
// sentinels below (which compare by Code) or errors.As to read Code/Reason.
type Error struct {
	Code Code
	// Reason is a short human-readable explanation, safe to return to clients.
	Reason string
	// Err is the underlying cause, if any (e.g. a Redis or context error).
	Err error
}

// Sentinels for errors.Is; they compare by Code only.
var (
	ErrUnavailable        = &Error{Code: CodeUnavailable, Reason: "rate limit store unavailable"}
	ErrInvalidLimit       = &Error{Code: CodeInvalidLimit, Reason: "invalid rate limit"}
	ErrUnknownReservation = &Error{Code: CodeUnknownReservation, Reason: "unknown token reservation"}
	ErrClosed             = &Error{Code: CodeClosed, Reason: "rate limiter closed"}
)

func (e *Error) Error() string {
	msg := "ratelimit: " + string(e.Code)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true for every Error with that Code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func invalidf(format string, args ...any) error {
	return &Error{Code: CodeInvalidLimit, Reason: fmt.Sprintf(format, args...)}
}
