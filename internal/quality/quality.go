// Package quality judges a model's answer beyond its safety: why it ended
// (finish reason: stop, length, tool_calls, content_filter), whether it is
// empty, a refusal (detect.DetectRefusal), cut at the max-tokens cap, valid
// JSON when the request asked for JSON (and valid against the request's
// JSON schema when it gave one), how long the first token took and how fast
// tokens came. The exchange fills input.response.quality from it, the
// metrics count it by model, and a Monitor alerts when a model's refusal
// or error rate jumps over its own recent baseline.
package quality

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// Finish reasons, normalised across providers.
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishToolCalls     = "tool_calls"
	FinishContentFilter = "content_filter"
	FinishError         = "error"
	FinishOther         = "other"
	FinishNone          = "none" // the answer named none
)

// NormalizeFinish maps a provider's finish reason (OpenAI finish_reason,
// Responses status, Anthropic and Bedrock stop_reason, Gemini finishReason)
// to one of the Finish constants.
func NormalizeFinish(r string) string {
	switch strings.ToLower(strings.TrimSpace(r)) {
	case "":
		return FinishNone
	case "stop", "end_turn", "stop_sequence", "completed", "finish_reason_stop", "eos":
		return FinishStop
	case "length", "max_tokens", "incomplete", "model_context_window_exceeded":
		return FinishLength
	case "tool_calls", "function_call", "tool_use":
		return FinishToolCalls
	case "content_filter", "content_filtered", "guardrail_intervened", "refusal", "safety", "recitation",
		"blocklist", "prohibited_content", "spii", "image_safety":
		return FinishContentFilter
	case "failed", "error", "malformed_function_call":
		return FinishError
	}
	return FinishOther
}

// Format is what the request asked the answer to be.
type Format struct {
	// JSON: the request asked for JSON (OpenAI response_format json_object
	// or json_schema, Responses text.format, Gemini responseMimeType).
	JSON bool
	// Schema, when the request gave a JSON schema, validates the answer.
	Schema *jsonschema.Schema
	// SchemaError says why a schema the request gave could not be compiled
	// (the answer is then only checked to be JSON).
	SchemaError string
}

// formatFields is the part of a request body ParseFormat reads.
type formatFields struct {
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
	Text *struct {
		Format *struct {
			Type   string          `json:"type"`
			Schema json.RawMessage `json:"schema"`
		} `json:"format"`
	} `json:"text"`
	GenerationConfig *struct {
		ResponseMimeType   string          `json:"responseMimeType"`
		ResponseSchema     json.RawMessage `json:"responseSchema"`
		ResponseJSONSchema json.RawMessage `json:"responseJsonSchema"`
	} `json:"generationConfig"`
}

// maxSchemaBytes bounds a schema compiled from a request.
const maxSchemaBytes = 64 << 10

// ParseFormat reads what answer format a request body asks for. A body
// that names no format costs one substring search; one that does is
// decoded once more (only the format fields are kept). An error means the
// body names a format Bulwark could not read; the zero Format is then
// returned.
func ParseFormat(body []byte) (Format, error) {
	if !bytes.Contains(body, []byte(`"response_format"`)) && !bytes.Contains(body, []byte(`"format"`)) &&
		!bytes.Contains(body, []byte(`"responseMimeType"`)) {
		return Format{}, nil
	}
	var f formatFields
	if err := json.Unmarshal(body, &f); err != nil {
		return Format{}, fmt.Errorf("quality: read response format: %w", err)
	}
	var out Format
	var schema json.RawMessage
	switch {
	case f.ResponseFormat != nil && (f.ResponseFormat.Type == "json_object" || f.ResponseFormat.Type == "json_schema"):
		out.JSON = true
		if f.ResponseFormat.JSONSchema != nil {
			schema = f.ResponseFormat.JSONSchema.Schema
		}
	case f.Text != nil && f.Text.Format != nil && (f.Text.Format.Type == "json_object" || f.Text.Format.Type == "json_schema"):
		out.JSON = true
		schema = f.Text.Format.Schema
	case f.GenerationConfig != nil && strings.EqualFold(f.GenerationConfig.ResponseMimeType, "application/json"):
		out.JSON = true
		schema = f.GenerationConfig.ResponseJSONSchema
		// responseSchema is Gemini's OpenAPI subset (upper-case types):
		// not a JSON schema, so only JSON-ness is checked for it.
	}
	if len(schema) > 0 && !bytes.Equal(bytes.TrimSpace(schema), []byte("null")) {
		sch, err := compileSchema(schema)
		if err != nil {
			out.SchemaError = err.Error()
		} else {
			out.Schema = sch
		}
	}
	return out, nil
}

// noLoader refuses every external reference: a schema from a request must
// not make Bulwark read files or URLs.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, errors.New("external schema references are not followed")
}

func compileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	if len(raw) > maxSchemaBytes {
		return nil, fmt.Errorf("schema larger than %d bytes", maxSchemaBytes)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	const loc = "request://schema.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return sch, nil
}

// Answer is what is known of a finished answer.
type Answer struct {
	// Status is the answer's HTTP status.
	Status int
	// Text is the answer's output text (choices, content blocks), Calls
	// how many tool calls it made.
	Text  string
	Calls int
	// FinishReason is the provider's own.
	FinishReason string
	// MaxTokens is the request's cap (0: none given), OutputTokens the
	// model's reported output tokens (0: not reported).
	MaxTokens, OutputTokens int64
	// Format is what the request asked for.
	Format Format
	// Start is when the request was sent on, FirstToken when the first
	// output text arrived (zero for an answer read whole), End when the
	// answer ended.
	Start, FirstToken, End time.Time
}

// Signals are the quality findings on one answer (input.response.quality).
type Signals struct {
	FinishReason string
	Empty        bool
	Refusal      detect.Refusal
	Truncated    bool
	// JSONRequested: the request asked for JSON; JSONValid then says
	// whether the answer is JSON (and matches the schema when one was
	// given), JSONError why not (no answer text is quoted).
	JSONRequested bool
	JSONValid     bool
	JSONError     string
	// TimeToFirstToken is zero for an answer read whole.
	TimeToFirstToken time.Duration
	// TokensPerSecond is output tokens over the time from the first token
	// (or the request, for an answer read whole) to the end; 0 unknown.
	TokensPerSecond float64
}

// Assess judges an answer.
func Assess(a Answer) Signals {
	s := Signals{FinishReason: NormalizeFinish(a.FinishReason)}
	if a.Status >= 400 {
		s.FinishReason = FinishError
	}
	text := strings.TrimSpace(a.Text)
	s.Empty = text == "" && a.Calls == 0 && s.FinishReason != FinishError
	if text != "" {
		s.Refusal = detect.DetectRefusal(text)
	}
	s.Truncated = s.FinishReason == FinishLength || (a.MaxTokens > 0 && a.OutputTokens >= a.MaxTokens)
	if a.Format.JSON && a.Status < 400 && a.Calls == 0 {
		s.JSONRequested = true
		s.JSONValid, s.JSONError = checkJSON(text, a.Format)
	}
	if !a.FirstToken.IsZero() && !a.Start.IsZero() && a.FirstToken.After(a.Start) {
		s.TimeToFirstToken = a.FirstToken.Sub(a.Start)
	}
	from := a.FirstToken
	if from.IsZero() {
		from = a.Start
	}
	if a.OutputTokens > 0 && !from.IsZero() && a.End.After(from) {
		s.TokensPerSecond = float64(a.OutputTokens) / a.End.Sub(from).Seconds()
	}
	return s
}

// checkJSON validates text as JSON, against the format's schema when it
// has one. The error names what failed, never the answer's content.
func checkJSON(text string, f Format) (bool, string) {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return false, "not_json"
	}
	if f.Schema == nil {
		return true, ""
	}
	if err := f.Schema.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return false, "schema_mismatch"
		}
		return false, "schema_error"
	}
	return true, ""
}
