# Content safety and output sanitisation (data.bulwark.content_safety,
# data.bulwark.output). Bulwark's detectors match the categories' terms on
# the normalised text of prompts (categories whose directions list
# "request") and answers ("response"), and report each match in
# input.signals.content_safety as {category, start, end}; in answers they
# also report unsafe links, images and HTML in input.signals.markup
# ([{type, count}], by reason). This file turns them into decisions; the
# category's action (deny, redact or flag) is read from data here, so
# operators change behaviour in data.yaml alone.
package bulwark

import rego.v1

content_categories := c if {
	c := data.bulwark.content_safety.categories
	is_object(c)
} else := {}

content_action(name) := object.get(content_categories, [name, "action"], "flag")

# The categories with a deny action that matched the text being decided
# (sorted, so the metadata is the same every time).
content_denied := sort({m.category |
	some m in object.get(input, ["signals", "content_safety"], [])
	content_action(m.category) == "deny"
})

# A prompt (or an answer) holding a deny category's term: 403
# blocked_content, the categories in the decision's metadata. The message
# names no term.
content_blocked_decision := {
	"allowed": false,
	"http_status": 403,
	"reason": "blocked_content",
	"message": "the text contains content this gateway's policy blocks",
	"dynamic_metadata": {"content_safety_categories": content_denied},
}

# Redaction rules for the categories whose action is redact: every such
# category, matched or not, since a streamed answer's rules are fixed
# before its text arrives (the detectors only report the categories of
# the direction they read).
content_redact_rules := [{"detector": "content_safety", "types": types}] if {
	types := sort({name |
		some name, c in content_categories
		c.action == "redact"
	})
	count(types) > 0
} else := []

# Unsafe markup in answers is removed: a link's or image's destination and
# brackets (its text stays), a tag that loads or links outside
# data.bulwark.output.allowed_link_hosts, script-like HTML. First, so that
# a finding inside a removed URL (an e-mail address in its query) goes
# with the URL.
markup_redact_rules := [{"detector": "markup", "action": "remove"}]

request_redact_rules := array.concat(data.bulwark.redact.request, content_redact_rules)

response_redact_rules := array.concat(array.concat(markup_redact_rules, data.bulwark.redact.response), content_redact_rules)
