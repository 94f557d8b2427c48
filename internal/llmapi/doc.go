// Package llmapi understands the bodies of LLM API calls — OpenAI chat,
// completions, responses and embeddings, Anthropic messages, and anything
// else as generic JSON or text — so that policy can see what a request asks
// the model to read and what the model answered, and so that Bulwark can
// rewrite those bodies (redaction, max-token clamps, usage reporting, system
// prompt suffixes) without disturbing anything it does not understand.
//
// Bodies are read with a small span-based JSON scanner rather than decoded
// into Go values: every rewrite is a splice into the original bytes, so
// unknown fields, whitespace, key order and numbers such as 1e400 survive
// byte for byte, and reading a streamed event costs two linear passes
// (validation, then lookup) with no maps. Keys match exactly (after unescaping), as Python and JavaScript
// parsers do, and when a key is duplicated every occurrence is scanned and
// rewritten, because parsers disagree on which one wins.
//
// Requests are inspected by default: after reading the conversation the way
// each API defines it, every other string value of the body, at any depth,
// is read too (tool descriptions, schemas, names, fields no API defines),
// unless it is an identifier in a documented safe field; text carried in
// data: URLs, base64 files and multipart uploads is read decoded. What is
// read is exactly what RequestEdit.Text rewrites.
//
// Streams are handled by SSEParser, which splits arbitrary chunks into
// events while keeping each event's exact bytes, by DecodeEvent, which
// reads one event of each API, and by FilterEvent and ChannelEvent, which
// rewrite and synthesise them.
//
// What a client receives is filtered by EditResponse (a whole answer) and
// FilterEvent (one stream event): every string not on the safe list
// (SafeKey) goes through the caller's filter, the deltas of each incremental
// text tagged with their Channel so that a value split over events can be
// caught; EventEnds and ChannelEvent tell when a channel closes and
// synthesise the event that releases what was held for it.
//
// Nothing in this package panics on any input and nothing holds state
// except an SSEParser, which belongs to one stream.
package llmapi
