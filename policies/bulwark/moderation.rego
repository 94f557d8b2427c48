# The moderation model (--moderation-url) as a second opinion on prompts and
# answers. Its verdict is input.signals.moderation, present only when one is
# configured and there was text:
#   {available, flagged, categories: [names flagged], scores: {name: 0..1},
#    error, cached, failure_mode: fail_open | fail_closed}
# decision.rego asks moderation_denies in the request chain (after the
# injection and tool checks) and in the response chain, and answers with
# moderation_decision. What denies is data: data.bulwark.moderation.
package bulwark

import rego.v1

moderation_verdict := input.signals.moderation

# (A policy copy whose data lacks the keys denies on any flagged verdict.)
default moderation_deny_list := []

moderation_deny_list := data.bulwark.moderation.deny_categories

# The categories that deny: those the model flagged (all of them, or those
# in deny_categories), and those whose score reaches score_thresholds.
moderation_denied_categories contains c if {
	moderation_verdict.available
	moderation_verdict.flagged
	some c in moderation_verdict.categories
	moderation_category_denies(c)
}

moderation_denied_categories contains c if {
	moderation_verdict.available
	some c, threshold in data.bulwark.moderation.score_thresholds
	moderation_verdict.scores[c] >= threshold
}

moderation_category_denies(_) if count(moderation_deny_list) == 0

moderation_category_denies(c) if c in moderation_deny_list

# A verdict denies when a category denies, or when it is flagged without
# naming any category and every flagged verdict denies.
moderation_flagged_denies if count(moderation_denied_categories) > 0

moderation_flagged_denies if {
	moderation_verdict.available
	moderation_verdict.flagged
	count(moderation_verdict.categories) == 0
	count(moderation_deny_list) == 0
}

# No verdict, and the operator said that must not pass.
moderation_unavailable_denies if {
	not moderation_verdict.available
	moderation_verdict.failure_mode == "fail_closed"
}

moderation_denies if moderation_flagged_denies

moderation_denies if moderation_unavailable_denies

moderation_subject := "answer" if response_phase
else := "request"

moderation_decision := {
	"allowed": false,
	"http_status": 403,
	"reason": "moderation_flagged",
	"message": sprintf("the moderation model flagged this %s", [moderation_subject]),
	"dynamic_metadata": {"moderation_categories": sort(moderation_denied_categories)},
	"audit": {"moderation_categories": sort(moderation_denied_categories)},
} if {
	moderation_flagged_denies
} else := {
	"allowed": false,
	"http_status": 503,
	"reason": "moderation_unavailable",
	"message": sprintf("the %s could not be checked by the moderation model; try again later", [moderation_subject]),
	"dynamic_metadata": {"moderation_error": moderation_verdict.error},
} if {
	moderation_unavailable_denies
}
