package bulwark_test

import rego.v1

import data.bulwark

budget_alice := {"id": "alice", "kind": "api_key", "roles": ["user"], "tenant": "acme", "claims": {}}

budget_req(principal, month_usd, day_usd) := {
	"attributes": {"request": {"http": {"method": "POST", "path": "/v1/chat/completions", "body": "{}"}}},
	"phase": "request_body",
	"principal": principal,
	"parsed_body": {"model": "gpt-4o", "messages": []},
	"llm": {"api": "openai.chat", "model": "gpt-4o", "max_tokens": 0, "n": 1, "messages": [], "estimated_tokens": 1},
	"signals": {"prompt_injection": {"score": 0, "rules": []}, "pii": [], "secrets": []},
	"usage": {"tenant": {
		"month": {"cost_usd": month_usd, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "requests": 0, "denials": 0},
		"day": {"cost_usd": day_usd, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "requests": 0, "denials": 0},
		"known": true,
	}},
}

budgets := {"acme": {"monthly_usd": 100, "daily_usd": 10}}

test_budget_under_is_allowed if {
	d := bulwark.decision with input as budget_req(budget_alice, 99.5, 9.99) with data.bulwark.usage.budgets as budgets
	d.allowed
}

test_budget_monthly_spent_is_429 if {
	d := bulwark.decision with input as budget_req(budget_alice, 100, 1) with data.bulwark.usage.budgets as budgets
	not d.allowed
	d.http_status == 429
	d.reason == "budget_exceeded"
	contains(d.message, "monthly budget of 100 USD")
}

test_budget_daily_spent_is_429 if {
	d := bulwark.decision with input as budget_req(budget_alice, 50, 12.5) with data.bulwark.usage.budgets as budgets
	not d.allowed
	d.reason == "budget_exceeded"
	d.dynamic_metadata.budget_period == "daily"
}

test_budget_other_tenant_unaffected if {
	bob := object.union(budget_alice, {"tenant": "beta"})
	d := bulwark.decision with input as budget_req(bob, 1000, 1000) with data.bulwark.usage.budgets as budgets
	d.allowed
}

test_budget_zero_means_none if {
	d := bulwark.decision with input as budget_req(budget_alice, 1000, 1000) with data.bulwark.usage.budgets as {"acme": {"monthly_usd": 0}}
	d.allowed
}

test_budget_without_usage_input_is_allowed if {
	# A deployment without usage totals (input.usage absent) is never refused for budget.
	d := bulwark.decision with input as object.remove(budget_req(budget_alice, 0, 0), ["usage"]) with data.bulwark.usage.budgets as budgets
	d.allowed
}

test_budget_default_data_has_no_budgets if {
	d := bulwark.decision with input as budget_req(budget_alice, 1000000, 1000000)
	d.allowed
}
