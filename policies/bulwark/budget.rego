# Budgets: a tenant that has spent its budget (data.bulwark.usage.budgets:
# tenant → {monthly_usd, daily_usd}) is refused new LLM requests with 429
# budget_exceeded until the period ends or the budget is raised.
#
# The spending is input.usage.tenant: the month's and the day's cost over
# every model, priced with data.bulwark.usage.prices when each answer's
# usage was recorded, every replica's exchanges included as of this
# replica's last record for the tenant (input.usage.tenant.known is false
# before its first one this month: the totals are then zero). An exchange
# already under way finishes; the next one is refused.
package bulwark

import rego.v1

budget_denial := {
	"allowed": false,
	"http_status": 429,
	"reason": "budget_exceeded",
	"message": sprintf("tenant %s has spent its %s budget of %v USD", [input.principal.tenant, budget_period, budget_limit]),
	"dynamic_metadata": {"budget_period": budget_period},
}

budget_exceeded if budget_period

default budget_period := false

budget_period := "monthly" if {
	input.usage.tenant.month.cost_usd >= tenant_budget.monthly_usd
	tenant_budget.monthly_usd > 0
} else := "daily" if {
	input.usage.tenant.day.cost_usd >= tenant_budget.daily_usd
	tenant_budget.daily_usd > 0
}

budget_limit := tenant_budget.monthly_usd if budget_period == "monthly"

budget_limit := tenant_budget.daily_usd if budget_period == "daily"

tenant_budget := data.bulwark.usage.budgets[input.principal.tenant] if input.principal.tenant != ""
