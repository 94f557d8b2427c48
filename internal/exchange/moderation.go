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

// moderateWindow asks the moderation model about the streamed answer's
// text gathered since the last window, once ModerationWindow new bytes
// are there (or, when force is set, any), and the policy about its verdict
// (phase response_body_chunk, input.signals.moderation). A deny withholds
// what out received since mark and ends the stream with an error event in
// the API's shape. Without a moderator it does nothing.
func (x *Session) moderateWindow(ctx context.Context, out *[]byte, mark int, force bool) error {
	rs := x.resp
	m := x.c.opts.Moderator
	if m == nil || rs.modNew == 0 || (!force && rs.modNew < x.c.opts.ModerationWindow) {
		return nil
	}
	v := m.Moderate(ctx, string(rs.modText))
	// Keep the window's tail, cut at a character's start, for the next.
	keep := max(len(rs.modText)-moderationOverlap, 0)
	for keep < len(rs.modText) && !utf8.RuneStart(rs.modText[keep]) {
		keep++
	}
	rs.modText = append(rs.modText[:0], rs.modText[keep:]...)
	rs.modNew = 0
	sig := detect.Signals{Moderation: &v}
	var res Result
	o, err := x.decide(ctx, pipeline.PhaseResponseBodyChunk, pipeline.Request{Input: x.responseInput(nil), Signals: &sig}, &res)
	if err != nil {
		return err
	}
	rs.cur.Decided, rs.cur.Outcome, rs.cur.Phase = true, res.Outcome, res.Phase
	if o.Decision.Allowed {
		return nil
	}
	*out = (*out)[:mark]
	return x.cutStream(o, out)
}
