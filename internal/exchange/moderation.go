package exchange

import (
	"context"
	"unicode/utf8"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
)

// moderationOverlap is how many bytes of a streamed answer's window are
// asked about again at the start of the next, so that text split over a
// window edge is seen whole by one call.
const moderationOverlap = 256

// A streamed answer goes to the moderation model window by window, and the
// client receives no text the model has not seen: what the exchange
// outputs after the first text of a window is held back (responseState.
// modHeld) until that window was asked about and allowed. So a flagged
// window never reaches the client, at the price of text arriving a window
// at a time (moderation_stream_window trades latency for calls). Events
// without text that come after held text wait behind it, keeping order.

// heldBack starts a chunk's output with what earlier chunks held back.
func (x *Session) heldBack() []byte {
	rs := x.resp
	out := rs.modHeld
	rs.modHeld, rs.modClear = nil, 0
	return out
}

// holdBack returns the part of a chunk's output the client may receive
// now and keeps the rest: the output from the first text the moderation
// model has not seen on. Without a moderator, or once the stream is over
// or every text was seen, all of it goes.
func (x *Session) holdBack(out []byte) []byte {
	rs := x.resp
	if x.c.opts.Moderator == nil || rs.ended || rs.modNew == 0 {
		return out
	}
	rs.modHeld = append([]byte(nil), out[rs.modClear:]...)
	return out[:rs.modClear]
}

// withholdUnmoderated drops, before the stream is cut for any reason, the
// output whose text the moderation model has not seen.
func (x *Session) withholdUnmoderated(out *[]byte) {
	if rs := x.resp; x.c.opts.Moderator != nil && rs.modNew > 0 {
		*out = (*out)[:min(rs.modClear, len(*out))]
	}
}

// moderateWindow asks the moderation model about the streamed answer's
// text gathered since the last window, once ModerationWindow new bytes
// are there (or, when force is set, any), and the policy about its verdict
// (phase response_body_chunk, input.signals.moderation). A deny drops what
// the model had not seen and ends the stream with an error event in the
// API's shape. Without a moderator it does nothing.
func (x *Session) moderateWindow(ctx context.Context, out *[]byte, force bool) error {
	rs := x.resp
	m := x.c.opts.Moderator
	if m == nil || rs.modNew == 0 || (!force && rs.modNew < x.c.opts.ModerationWindow) {
		return nil
	}
	v := m.Moderate(ctx, string(rs.modText))
	sig := detect.Signals{Moderation: &v}
	var res Result
	o, err := x.decide(ctx, pipeline.PhaseResponseBodyChunk, pipeline.Request{Input: x.responseInput(nil), Signals: &sig}, &res)
	if err != nil {
		return err
	}
	rs.cur.Decided, rs.cur.Outcome, rs.cur.Phase = true, res.Outcome, res.Phase
	if !o.Decision.Allowed {
		return x.cutStream(o, out) // drops what the model had not seen before this window
	}
	// Allowed: keep the window's tail, cut at a character's start, as the
	// next window's start.
	keep := max(len(rs.modText)-moderationOverlap, 0)
	for keep < len(rs.modText) && !utf8.RuneStart(rs.modText[keep]) {
		keep++
	}
	rs.modText = append(rs.modText[:0], rs.modText[keep:]...)
	rs.modNew = 0
	return nil
}
