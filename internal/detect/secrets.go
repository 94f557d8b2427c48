package detect

import (
	"bytes"
	"math"
	mbits "math/bits"
	"slices"
	"strings"
)

// charset classes for secret bodies.
type charset uint8

const (
	csAlnum      charset = iota // A-Za-z0-9
	csAlnumUS                   // + _
	csToken                     // + _ -
	csUpperAlnum                // A-Z0-9
	csHex                       // 0-9a-fA-F
	csLowerAlnum                // a-z0-9
	csB64                       // A-Za-z0-9+/=
	csTokenDot                  // A-Za-z0-9_-.
	csB64URLEq                  // A-Za-z0-9_-=+/
	csBech32                    // age keys: upper bech32
	csAlpha                     // A-Za-z
	csPath                      // A-Za-z0-9_-/
	csB64Pct                    // A-Za-z0-9+/=%  (Azure SAS signatures)
	numCharsets
)

// charsetRuns remembers, per charset, the last run of its bytes found, so
// that the hits of "sk-sk-sk-..." (each body running to the same end)
// find that end once rather than once each.
type charsetRuns [numCharsets]struct {
	valid    bool
	from, to int // b[from:to] is all in the charset; b[to] is not, or to == len(b)
}

// end returns the end of the run of cs bytes starting at i.
func (r *charsetRuns) end(b []byte, cs charset, i int) int {
	m := &r[cs]
	if !m.valid || i < m.from || i > m.to {
		e := i
		for e < len(b) && inCharset(cs, b[e]) {
			e++
		}
		m.valid, m.from, m.to = true, i, e
	}
	return m.to
}

func inCharset(cs charset, c byte) bool {
	switch cs {
	case csAlnum:
		return isASCIIAlnum(c)
	case csAlnumUS:
		return isASCIIAlnum(c) || c == '_'
	case csToken:
		return isASCIIAlnum(c) || c == '_' || c == '-'
	case csUpperAlnum:
		return 'A' <= c && c <= 'Z' || isDigit(c)
	case csHex:
		return isHexByte(c)
	case csLowerAlnum:
		return 'a' <= c && c <= 'z' || isDigit(c)
	case csB64:
		return isASCIIAlnum(c) || c == '+' || c == '/' || c == '='
	case csTokenDot:
		return isASCIIAlnum(c) || c == '_' || c == '-' || c == '.'
	case csB64URLEq:
		return isASCIIAlnum(c) || c == '_' || c == '-' || c == '=' || c == '+' || c == '/'
	case csBech32:
		return strings.IndexByte("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", c) >= 0
	case csAlpha:
		return isLetter(c)
	case csPath:
		return isASCIIAlnum(c) || c == '_' || c == '-' || c == '/'
	case csB64Pct:
		return inCharset(csB64, c) || c == '%'
	}
	return false
}

// secretRule is one well-known credential format: a literal prefix found by
// the prefilter, then a body of min..max bytes from one charset.
type secretRule struct {
	typ      string
	prefix   string
	cs       charset
	min, max int
	// fold matches the prefix case-insensitively (the prefilter always does;
	// the verifier checks exact case unless fold).
	fold bool
	// inner allows the prefix to follow a token character (URLs, ids).
	inner bool
	// special runs instead of the body check: it gets the clean view and the
	// prefix span and returns the secret span.
	special func(b []byte, ps, pe int) (int, int, bool)
	// find is special for rules that search ahead for a marker (a PEM END
	// line): m shares that search between the rule's hits.
	find func(b []byte, ps, pe int, m *markerMemo) (int, int, bool)
	// check, when set, validates the body further.
	check func(body []byte) bool
	// score overrides the default confidence of 1.0 (identifiers that are
	// sensitive but not secret, such as publishable keys).
	score float64
}

// Secret types reported for generic findings.
const (
	TypeGenericSecret = "GENERIC_SECRET"
	TypePassword      = "PASSWORD"
)

var secretRules = []secretRule{
	{typ: "AWS_ACCESS_KEY_ID", prefix: "AKIA", cs: csUpperAlnum, min: 16, max: 16},
	{typ: "AWS_ACCESS_KEY_ID", prefix: "ASIA", cs: csUpperAlnum, min: 16, max: 16},
	{typ: "AWS_ACCESS_KEY_ID", prefix: "ABIA", cs: csUpperAlnum, min: 16, max: 16},
	{typ: "AWS_ACCESS_KEY_ID", prefix: "ACCA", cs: csUpperAlnum, min: 16, max: 16},
	{typ: "AWS_SECRET_ACCESS_KEY", prefix: "aws_secret_access_key", fold: true, find: awsSecretMemo},
	{typ: "AWS_BEDROCK_API_KEY", prefix: "ABSK", cs: csB64, min: 100, max: 400},
	{typ: "GITHUB_TOKEN", prefix: "ghp_", cs: csAlnum, min: 36, max: 40},
	{typ: "GITHUB_TOKEN", prefix: "gho_", cs: csAlnum, min: 36, max: 40},
	{typ: "GITHUB_TOKEN", prefix: "ghu_", cs: csAlnum, min: 36, max: 40},
	{typ: "GITHUB_TOKEN", prefix: "ghs_", cs: csAlnumUS, min: 36, max: 300},
	{typ: "GITHUB_TOKEN", prefix: "ghr_", cs: csAlnum, min: 36, max: 80},
	{typ: "GITHUB_FINE_GRAINED_PAT", prefix: "github_pat_", cs: csAlnumUS, min: 60, max: 100},
	{typ: "GITLAB_TOKEN", prefix: "glpat-", cs: csTokenDot, min: 20, max: 80},
	{typ: "GITLAB_TOKEN", prefix: "gldt-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glrt-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glptt-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glcbt-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glft-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glimt-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glagent-", cs: csToken, min: 20, max: 80},
	{typ: "GITLAB_TOKEN", prefix: "gloas-", cs: csToken, min: 20, max: 80},
	{typ: "GITLAB_TOKEN", prefix: "glsoat-", cs: csToken, min: 20, max: 80},
	{typ: "GITLAB_TOKEN", prefix: "GR1348941", cs: csToken, min: 20, max: 64},
	{typ: "SLACK_TOKEN", prefix: "xoxb-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xoxp-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xoxa-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xoxr-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xoxs-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xoxe-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xoxe.xoxp-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_TOKEN", prefix: "xapp-", cs: csToken, min: 20, max: 250},
	{typ: "SLACK_WEBHOOK", prefix: "hooks.slack.com/services/", cs: csPath, min: 20, max: 120, inner: true},
	{typ: "SLACK_WEBHOOK", prefix: "hooks.slack.com/workflows/", cs: csPath, min: 20, max: 120, inner: true},
	{typ: "STRIPE_KEY", prefix: "sk_live_", cs: csAlnum, min: 16, max: 247},
	{typ: "STRIPE_KEY", prefix: "sk_test_", cs: csAlnum, min: 16, max: 247},
	{typ: "STRIPE_KEY", prefix: "rk_live_", cs: csAlnum, min: 16, max: 247},
	{typ: "STRIPE_KEY", prefix: "rk_test_", cs: csAlnum, min: 16, max: 247},
	{typ: "STRIPE_WEBHOOK_SECRET", prefix: "whsec_", cs: csB64, min: 24, max: 100},
	{typ: "OPENAI_API_KEY", prefix: "sk-proj-", cs: csToken, min: 40, max: 250},
	{typ: "OPENAI_API_KEY", prefix: "sk-svcacct-", cs: csToken, min: 40, max: 250},
	{typ: "OPENAI_API_KEY", prefix: "sk-admin-", cs: csToken, min: 40, max: 250},
	{typ: "OPENAI_API_KEY", prefix: "sk-None-", cs: csToken, min: 40, max: 250},
	{typ: "DEEPSEEK_API_KEY", prefix: "sk-", cs: csHex, min: 32, max: 32},
	{typ: "LLM_API_KEY", prefix: "sk-", cs: csToken, min: 32, max: 250, check: randomBody},
	{typ: "ANTHROPIC_API_KEY", prefix: "sk-ant-", cs: csToken, min: 32, max: 200},
	{typ: "GOOGLE_API_KEY", prefix: "AIza", cs: csToken, min: 35, max: 35},
	{typ: "GOOGLE_OAUTH_CLIENT_SECRET", prefix: "GOCSPX-", cs: csToken, min: 28, max: 28},
	{typ: "GOOGLE_OAUTH_ACCESS_TOKEN", prefix: "ya29.", cs: csToken, min: 30, max: 2048},
	{typ: "GOOGLE_OAUTH_REFRESH_TOKEN", prefix: "1//0", cs: csToken, min: 30, max: 512},
	{typ: "HUGGINGFACE_TOKEN", prefix: "hf_", cs: csAlnum, min: 30, max: 40},
	{typ: "HUGGINGFACE_TOKEN", prefix: "api_org_", cs: csAlnum, min: 30, max: 40},
	{typ: "GROQ_API_KEY", prefix: "gsk_", cs: csAlnum, min: 48, max: 56},
	{typ: "REPLICATE_API_TOKEN", prefix: "r8_", cs: csAlnum, min: 37, max: 40},
	{typ: "PERPLEXITY_API_KEY", prefix: "pplx-", cs: csAlnum, min: 48, max: 56},
	{typ: "XAI_API_KEY", prefix: "xai-", cs: csAlnum, min: 70, max: 90},
	{typ: "TOGETHER_API_KEY", prefix: "tgp_v1_", cs: csToken, min: 40, max: 48},
	{typ: "TAVILY_API_KEY", prefix: "tvly-", cs: csToken, min: 32, max: 48},
	{typ: "NPM_TOKEN", prefix: "npm_", cs: csAlnum, min: 36, max: 36},
	{typ: "PYPI_TOKEN", prefix: "pypi-AgEIcHlwaS5vcmc", cs: csToken, min: 50, max: 300},
	{typ: "RUBYGEMS_API_KEY", prefix: "rubygems_", cs: csHex, min: 48, max: 48},
	{typ: "CLOJARS_TOKEN", prefix: "CLOJARS_", cs: csAlnum, min: 60, max: 60},
	{typ: "NUGET_API_KEY", prefix: "oy2", cs: csLowerAlnum, min: 43, max: 43},
	{typ: "TWILIO_API_KEY", prefix: "SK", cs: csHex, min: 32, max: 32},
	{typ: "TWILIO_ACCOUNT_SID", prefix: "AC", cs: csHex, min: 32, max: 32},
	{typ: "SENDGRID_API_KEY", prefix: "SG.", cs: csTokenDot, min: 66, max: 66},
	{typ: "MAILGUN_API_KEY", prefix: "key-", cs: csHex, min: 32, max: 32},
	{typ: "MAILCHIMP_API_KEY", prefix: "-us", inner: true, special: mailchimp},
	{typ: "BREVO_API_KEY", prefix: "xkeysib-", cs: csToken, min: 60, max: 90},
	{typ: "SHOPIFY_TOKEN", prefix: "shpat_", cs: csHex, min: 32, max: 32},
	{typ: "SHOPIFY_TOKEN", prefix: "shpss_", cs: csHex, min: 32, max: 32},
	{typ: "SHOPIFY_TOKEN", prefix: "shpca_", cs: csHex, min: 32, max: 32},
	{typ: "SHOPIFY_TOKEN", prefix: "shppa_", cs: csHex, min: 32, max: 32},
	{typ: "PRIVATE_KEY", prefix: "-----BEGIN ", fold: true, inner: true, find: pemKeyMemo},
	{typ: "PRIVATE_KEY", prefix: "PuTTY-User-Key-File-", find: puttyKeyMemo},
	{typ: "JWT", prefix: "eyJ", inner: true, find: jwtMemo},
	{typ: "BULWARK_API_KEY", prefix: "bwk_", cs: csToken, min: 20, max: 128},
	{typ: "CONNECTION_STRING", prefix: "://", inner: true, special: urlCreds},
	{typ: "AZURE_STORAGE_KEY", prefix: "AccountKey=", fold: true, inner: true, find: azureAccountKeyMemo},
	{typ: "AZURE_CLIENT_SECRET", prefix: "Q~", inner: true, special: azureClientSecret},
	{typ: "AZURE_SAS_TOKEN", prefix: "sig=", inner: true, find: azureSASMemo},
	{typ: "DIGITALOCEAN_TOKEN", prefix: "dop_v1_", cs: csHex, min: 64, max: 64},
	{typ: "DIGITALOCEAN_TOKEN", prefix: "doo_v1_", cs: csHex, min: 64, max: 64},
	{typ: "DIGITALOCEAN_TOKEN", prefix: "dor_v1_", cs: csHex, min: 64, max: 64},
	{typ: "DISCORD_WEBHOOK", prefix: "discord.com/api/webhooks/", cs: csPath, min: 60, max: 120, inner: true},
	{typ: "DISCORD_WEBHOOK", prefix: "discordapp.com/api/webhooks/", cs: csPath, min: 60, max: 120, inner: true},
	{typ: "TELEGRAM_BOT_TOKEN", prefix: ":AA", inner: true, special: telegram},
	{typ: "SQUARE_TOKEN", prefix: "sq0atp-", cs: csToken, min: 22, max: 60},
	{typ: "SQUARE_TOKEN", prefix: "sq0csp-", cs: csToken, min: 40, max: 60},
	{typ: "SQUARE_TOKEN", prefix: "EAAA", cs: csToken, min: 60, max: 60},
	{typ: "ATLASSIAN_API_TOKEN", prefix: "ATATT3", cs: csB64URLEq, min: 150, max: 300},
	{typ: "ATLASSIAN_API_TOKEN", prefix: "ATCTT3", cs: csB64URLEq, min: 150, max: 300},
	{typ: "LINEAR_API_KEY", prefix: "lin_api_", cs: csAlnum, min: 40, max: 40},
	{typ: "NOTION_TOKEN", prefix: "ntn_", cs: csAlnum, min: 40, max: 50},
	{typ: "NOTION_TOKEN", prefix: "secret_", cs: csAlnum, min: 43, max: 43},
	{typ: "POSTMAN_API_KEY", prefix: "PMAK-", cs: csToken, min: 59, max: 59},
	{typ: "DATABRICKS_TOKEN", prefix: "dapi", cs: csHex, min: 32, max: 34},
	{typ: "DOPPLER_TOKEN", prefix: "dp.pt.", cs: csAlnum, min: 40, max: 44},
	{typ: "DOPPLER_TOKEN", prefix: "dp.st.", cs: csTokenDot, min: 40, max: 60},
	{typ: "DOPPLER_TOKEN", prefix: "dp.ct.", cs: csAlnum, min: 40, max: 44},
	{typ: "DOPPLER_TOKEN", prefix: "dp.sa.", cs: csAlnum, min: 40, max: 44},
	{typ: "SENTRY_TOKEN", prefix: "sntrys_", cs: csB64URLEq, min: 30, max: 300},
	{typ: "SENTRY_TOKEN", prefix: "sntryu_", cs: csHex, min: 64, max: 64},
	{typ: "GRAFANA_TOKEN", prefix: "glsa_", cs: csAlnumUS, min: 32, max: 50},
	{typ: "GRAFANA_TOKEN", prefix: "glc_", cs: csB64URLEq, min: 32, max: 400},
	{typ: "GRAFANA_TOKEN", prefix: "eyJrIjoi", cs: csB64URLEq, min: 50, max: 120},
	{typ: "NEW_RELIC_KEY", prefix: "NRAK-", cs: csUpperAlnum, min: 27, max: 27},
	{typ: "NEW_RELIC_KEY", prefix: "NRII-", cs: csToken, min: 20, max: 40},
	{typ: "NEW_RELIC_KEY", prefix: "NRJS-", cs: csHex, min: 19, max: 19},
	{typ: "NEW_RELIC_KEY", prefix: "NRAA-", cs: csHex, min: 27, max: 27},
	{typ: "PLANETSCALE_TOKEN", prefix: "pscale_tkn_", cs: csTokenDot, min: 32, max: 64},
	{typ: "PLANETSCALE_TOKEN", prefix: "pscale_pw_", cs: csTokenDot, min: 32, max: 64},
	{typ: "PLANETSCALE_TOKEN", prefix: "pscale_oauth_", cs: csTokenDot, min: 32, max: 64},
	{typ: "VAULT_TOKEN", prefix: "hvs.", cs: csToken, min: 24, max: 200},
	{typ: "VAULT_TOKEN", prefix: "hvb.", cs: csToken, min: 100, max: 300},
	{typ: "TERRAFORM_TOKEN", prefix: ".atlasv1.", inner: true, special: terraform},
	{typ: "AGE_SECRET_KEY", prefix: "AGE-SECRET-KEY-1", cs: csBech32, min: 58, max: 58},
	{typ: "DOCKER_HUB_TOKEN", prefix: "dckr_pat_", cs: csToken, min: 27, max: 40},
	{typ: "DOCKER_HUB_TOKEN", prefix: "dckr_oat_", cs: csToken, min: 27, max: 40},
	{typ: "ALIBABA_ACCESS_KEY_ID", prefix: "LTAI", cs: csAlnum, min: 12, max: 20},
	{typ: "JFROG_TOKEN", prefix: "AKCp", cs: csAlnum, min: 69, max: 69},
	{typ: "JFROG_TOKEN", prefix: "cmVmdGtuOjAxOj", cs: csAlnum, min: 50, max: 60},
	{typ: "VERCEL_TOKEN", prefix: "vcp_", cs: csAlnum, min: 24, max: 60},
	{typ: "VERCEL_TOKEN", prefix: "vci_", cs: csAlnum, min: 24, max: 60},
	{typ: "VERCEL_TOKEN", prefix: "vca_", cs: csAlnum, min: 24, max: 60},
	{typ: "VERCEL_TOKEN", prefix: "vcr_", cs: csAlnum, min: 24, max: 60},
	{typ: "VERCEL_TOKEN", prefix: "vck_", cs: csAlnum, min: 24, max: 60},
	{typ: "ONEPASSWORD_TOKEN", prefix: "ops_eyJ", cs: csToken, min: 200, max: 2000},
	{typ: "FIGMA_TOKEN", prefix: "figd_", cs: csToken, min: 40, max: 44},
	{typ: "HEROKU_API_KEY", prefix: "HRKU-", cs: csToken, min: 36, max: 80},
	{typ: "NETLIFY_TOKEN", prefix: "nfp_", cs: csAlnum, min: 36, max: 40},
	{typ: "DYNATRACE_TOKEN", prefix: "dt0c01.", cs: csTokenDot, min: 89, max: 89},
	{typ: "SONARQUBE_TOKEN", prefix: "squ_", cs: csHex, min: 40, max: 40},
	{typ: "SONARQUBE_TOKEN", prefix: "sqp_", cs: csHex, min: 40, max: 40},
	{typ: "SONARQUBE_TOKEN", prefix: "sqa_", cs: csHex, min: 40, max: 40},
	{typ: "POSTHOG_TOKEN", prefix: "phx_", cs: csAlnum, min: 40, max: 70},
	{typ: "SUPABASE_TOKEN", prefix: "sbp_", cs: csHex, min: 40, max: 40},
	{typ: "SUPABASE_TOKEN", prefix: "sb_secret_", cs: csToken, min: 20, max: 60},
	{typ: "FACEBOOK_ACCESS_TOKEN", prefix: "EAACEdEose0cBA", cs: csAlnum, min: 20, max: 250},
	{typ: "X_BEARER_TOKEN", prefix: "AAAAAAAAAAAAAAAAAAAAA", cs: csB64URLEq, min: 40, max: 200, special: xBearer},
	{typ: "DROPBOX_TOKEN", prefix: "sl.", cs: csToken, min: 130, max: 1400},
	{typ: "BITBUCKET_TOKEN", prefix: "ATBB", cs: csAlnumUS, min: 28, max: 40},
	{typ: "WUNDERGRAPH_API_KEY", prefix: "cosmo_", cs: csHex, min: 32, max: 32},
	{typ: "DEFINED_NETWORKING_TOKEN", prefix: "dnkey-", cs: csToken, min: 50, max: 80},
	{typ: "AKAMAI_TOKEN", prefix: "akab-", cs: csToken, min: 33, max: 33},
	{typ: "POSTHOG_TOKEN", prefix: "phc_", cs: csAlnum, min: 40, max: 60, score: 0.5},
	{typ: "POSTHOG_TOKEN", prefix: "phs_", cs: csAlnum, min: 40, max: 60},
	{typ: "POSTHOG_TOKEN", prefix: "phr_", cs: csAlnum, min: 40, max: 60},
	{typ: "POSTHOG_TOKEN", prefix: "pha_", cs: csAlnum, min: 40, max: 60},
	{typ: "POSTMAN_API_KEY", prefix: "PMAT-", cs: csAlnum, min: 26, max: 26},
	{typ: "NEW_RELIC_KEY", prefix: "NRBR-", cs: csHex, min: 19, max: 19},
	{typ: "NEW_RELIC_KEY", prefix: "NRAL", inner: true, special: newRelicLicense},
	{typ: "SUPABASE_TOKEN", prefix: "sbp_v0_", cs: csHex, min: 40, max: 40},
	{typ: "STRIPE_PUBLISHABLE_KEY", prefix: "pk_live_", cs: csAlnum, min: 16, max: 247, score: 0.5},
	{typ: "STRIPE_PUBLISHABLE_KEY", prefix: "pk_test_", cs: csAlnum, min: 16, max: 247, score: 0.5},
	{typ: "DROPBOX_TOKEN", prefix: "AAAAAAAAAA", inner: true, special: dropboxLongLived},
	{typ: "GOOGLE_OAUTH_CLIENT_ID", prefix: ".apps.googleusercontent.com", inner: true, special: googleClientID, score: 0.5},
	{typ: "NKEY_SEED", prefix: "SUA", cs: csUpperAlnum, min: 55, max: 55},
	{typ: "SALESFORCE_TOKEN", prefix: "00D", special: salesforceToken},
	{typ: "SALESFORCE_CONSUMER_KEY", prefix: "3MVG", cs: csTokenDot, min: 60, max: 100},
	{typ: "CLOUDFLARE_TOKEN", prefix: "cfat_", cs: csAlnum, min: 40, max: 50},
	{typ: "CLOUDFLARE_TOKEN", prefix: "cfut_", cs: csAlnum, min: 40, max: 50},
	{typ: "CLOUDFLARE_TOKEN", prefix: "cfk_", cs: csAlnum, min: 40, max: 50},
	{typ: "LLAMA_CLOUD_API_KEY", prefix: "llx-", cs: csToken, min: 40, max: 60},
	{typ: "DOCKER_SWARM_TOKEN", prefix: "SWMTKN-1-", cs: csToken, min: 50, max: 100},
	{typ: "DOCKER_SWARM_TOKEN", prefix: "SWMKEY-1-", cs: csToken, min: 40, max: 60},
	{typ: "AWS_BEDROCK_API_KEY", prefix: "bedrock-api-key-", cs: csB64, min: 20, max: 400},
	{typ: "BITBUCKET_TOKEN", prefix: "BBDC-", cs: csB64, min: 40, max: 48},
	{typ: "INSTAGRAM_TOKEN", prefix: "IGQVJ", cs: csToken, min: 100, max: 300},
	{typ: "GITLAB_TOKEN", prefix: "glffct-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glrtr-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_TOKEN", prefix: "glwt-", cs: csToken, min: 20, max: 64},
	{typ: "GITLAB_SESSION", prefix: "_gitlab_session=", inner: true, special: hexValue32},
	{typ: "NTLM_TOKEN", prefix: "TlRMTVNTUA", cs: csB64, min: 20, max: 2000},
	{typ: "AUTHORIZATION_HEADER", prefix: "ntlm ", fold: true, inner: true, special: basicAuth},
	{typ: "AUTHORIZATION_HEADER", prefix: "negotiate ", fold: true, inner: true, special: basicAuth},
	{typ: "DISCORD_BOT_TOKEN", prefix: "MT", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "Mj", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "Mz", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "ND", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "NT", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "Nj", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "Nz", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "OD", special: discordBot},
	{typ: "DISCORD_BOT_TOKEN", prefix: "OT", special: discordBot},
	{typ: "JSON_WEB_KEY", prefix: "\"kty\"", inner: true, find: jwkPrivateMemo},
	{typ: "ATLASSIAN_PAT", prefix: "MD", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "MT", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "Mj", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "Mz", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "ND", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "NT", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "Nj", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "Nz", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "OD", inner: true, special: jiraPAT},
	{typ: "ATLASSIAN_PAT", prefix: "OT", inner: true, special: jiraPAT},
	{typ: "AZURE_KEY", prefix: "JQQJ9", inner: true, special: azureIdentifiableKey},
	{typ: "FACEBOOK_APP_TOKEN", prefix: "|", inner: true, special: facebookAppToken},
	{typ: "BRAINTREE_ACCESS_TOKEN", prefix: "access_token$production$", special: braintree},
	{typ: "BRAINTREE_ACCESS_TOKEN", prefix: "access_token$sandbox$", special: braintree},
	{typ: "AUTHORIZATION_HEADER", prefix: "bearer ", fold: true, inner: true, special: bearer},
	{typ: "AUTHORIZATION_HEADER", prefix: "basic ", fold: true, inner: true, special: basicAuth},
}

// generic keywords: an identifier containing one of these, assigned a value.
// Keywords of four bytes or fewer must end the identifier ("api_key", not
// "keyboard").
var genericKeywords = []string{
	"password", "passwd", "passwort", "passphrase", "passcode", "pwd", "pw", "pswd", "psswd", "pswrd", "paswd",
	"paswrd", "pasword", "psword", "psswrd", "pssword", "passw", "contraseña", "senha", "secret", "token",
	"apikey", "api_key", "api-key", "api", "access_key", "accesskey", "private_key", "privatekey",
	"client_secret", "credential", "auth", "signing_key", "encryption_key", "master_key", "_key", "key", "pass",
}

// newSecretMatcher builds one prefilter over every rule prefix and every
// generic keyword. Pattern ids below len(secretRules) are rules; rule
// prefixes match exactly unless the rule folds case, keywords in any case.
func newSecretMatcher() *litSet {
	pats := make([]string, 0, len(secretRules)+len(genericKeywords))
	fold := make([]bool, 0, cap(pats))
	for _, r := range secretRules {
		pats = append(pats, r.prefix)
		fold = append(fold, r.fold)
	}
	for _, k := range genericKeywords {
		pats = append(pats, k)
		fold = append(fold, true)
	}
	return newLitSet(pats, fold, nil)
}

// secretCand is a prefilter hit: pattern id and the byte span of the literal.
type secretCand struct {
	ps, pe int32
	id     int32
}

// scanSecrets runs the prefilter once, then verifies candidates from left
// to right; at one position the longest literal is tried first, and a
// verified secret hides candidates inside it.
func (s *scratch) scanSecrets(m *litSet, b []byte) {
	cands := s.cands[:0]
	if cap(s.lastPs) < m.npats() {
		s.lastPs = make([]int32, m.npats())
	}
	lastPs := s.lastPs[:m.npats()]
	for i := range lastPs {
		lastPs[i] = -2
	}
	m.scan(b, func(id, start int) bool {
		end := start + len(m.pats[id])
		ps := int32(start)
		// In a run of one repeated literal ("AAAA..."), only the first
		// occurrence can start a token.
		prev := lastPs[id]
		lastPs[id] = ps
		if prev == ps-1 {
			return true
		}
		cands = append(cands, secretCand{ps: ps, pe: int32(end), id: int32(id)})
		return true
	})
	s.cands = cands
	slices.SortFunc(cands, func(a, b secretCand) int {
		if a.ps != b.ps {
			return int(a.ps - b.ps)
		}
		if a.pe != b.pe {
			return int(b.pe - a.pe)
		}
		return int(a.id - b.id)
	})
	nr := len(secretRules)
	// Pass 1: well-known formats.
	// The marker memo lives in scratch: the rules' find functions would
	// otherwise make it escape to the heap on every scan.
	s.markers = markerMemo{pemEnd: nextFinder{pat: "-----END "}, puttyLines: nextFinder{pat: "private-lines:", fold: true}}
	mm := &s.markers
	lastEnd := -1
	spans := s.spans[:0]
	for _, c := range cands {
		ps, end, id := int(c.ps), int(c.pe), int(c.id)
		if ps < lastEnd || id >= nr {
			continue
		}
		r := &secretRules[id]
		if !r.fold && string(b[ps:end]) != r.prefix {
			continue
		}
		if !r.inner && !tokenStart(b, ps) {
			continue
		}
		var st, en int
		var ok bool
		if r.find != nil {
			st, en, ok = r.find(b, ps, end, mm)
		} else if r.special != nil {
			st, en, ok = r.special(b, ps, end)
		} else {
			en = min(mm.runs.end(b, r.cs, end), end+r.max+1)
			n := en - end
			ok = n >= r.min && n <= r.max && tokenEnds(b, en, r.cs) && !isPlaceholder(b[ps:en])
			st = ps
			if ok && n > 12 && r.cs != csHex && lowEntropy(b[end:en]) {
				ok = false
			}
			if ok && r.check != nil {
				ok = r.check(b[end:en])
			}
		}
		if ok && st >= lastEnd {
			score := 1.0
			if r.score != 0 {
				score = r.score
			}
			s.addClean(detSecret, r.typ, st, en, score)
			spans = append(spans, [2]int32{int32(st), int32(en)})
			lastEnd = en
			if r.typ == "GOOGLE_OAUTH_CLIENT_ID" {
				if gs, ge, ok := googleClientSecret(b, en); ok {
					s.addClean(detSecret, "GOOGLE_OAUTH_CLIENT_SECRET", gs, ge, 0.8)
					spans = append(spans, [2]int32{int32(gs), int32(ge)})
				}
			}
		}
	}
	spans = s.mailgunKeys(b, spans)
	s.spans = spans
	// Pass 2: generic keyword assignments not overlapping a known format.
	// The identifier and value of every keyword hit are found first (cheap,
	// and linear over the whole text thanks to vm); the value checks, which
	// cost the length of the value, then run only on the first and last
	// maxGroupChecks hits of a chain: hits whose keyword lies inside the
	// value of an earlier hit of the chain. A chain longer than that is
	// "k1=k2=k3=...=value" with no delimiter in between, an adversarial
	// text (password= repeated) that would otherwise cost quadratic time.
	// The last hits have the shortest values, the ones most like a real
	// secret after a chain of keywords.
	var vm valueMemo
	gen := s.gen[:0]
	for _, c := range cands {
		if int(c.id) < nr {
			continue
		}
		g, ok := genericValue(b, int(c.ps), int(c.pe), &vm)
		if ok {
			gen = append(gen, g)
		}
	}
	s.gen = gen
	lastEnd = -1
	for i := 0; i < len(gen); {
		j, chainEnd := i+1, gen[i].en
		for j < len(gen) && gen[j].ks < chainEnd {
			chainEnd = max(chainEnd, gen[j].en)
			j++
		}
		for k := i; k < j; k++ {
			g := &gen[k]
			if int(g.ks) < lastEnd || k-i >= maxGroupChecks && j-k > maxGroupChecks {
				continue
			}
			st, en := int(g.st), int(g.en)
			if en-st <= maxValueLen { // longer values are refused at once
				s.valueWork += en - st
			}
			typ, score, ok := genericVerify(b[st:en], b[g.is:g.ie], g.password)
			if !ok || overlapsAny(spans, st, en) {
				continue
			}
			s.addClean(detSecret, typ, st, en, score)
			lastEnd = en
		}
		i = j
	}
}

// maxGroupChecks bounds the value checks per chain of keyword hits, at
// each end of the chain (see scanSecrets).
const maxGroupChecks = 8

func overlapsAny(spans [][2]int32, st, en int) bool {
	for _, sp := range spans {
		if int(sp[0]) < en && st < int(sp[1]) {
			return true
		}
	}
	return false
}

// tokenStart reports whether a token may start at ps: at the start, after a
// non-word byte, or right after an ANSI colour escape ("\x1b[93m").
func tokenStart(b []byte, ps int) bool {
	if ps == 0 || !(isASCIIAlnum(b[ps-1]) || b[ps-1] == '_') {
		return true
	}
	if b[ps-1] == 'm' {
		for k := ps - 2; k >= 0 && k >= ps-6; k-- {
			if b[k] == 0x1b {
				return true
			}
			if !(isDigit(b[k]) || b[k] == ';' || b[k] == '[') {
				return false
			}
		}
	}
	return false
}

// tokenEnds reports whether the body ended at en and not in the middle of
// a longer token of a related alphabet.
func tokenEnds(b []byte, en int, cs charset) bool {
	if en >= len(b) {
		return true
	}
	c := b[en]
	return !isASCIIAlnum(c) && c != '_' && !(c == '-' && cs == csToken)
}

// lowEntropy rejects bodies that are too repetitive to be random keys
// ("xxxxxxxx", "1234567890abcdef...").
func lowEntropy(v []byte) bool {
	return entropy(v) < 3.0
}

// entropy is the Shannon entropy of v in bits per byte.
func entropy(v []byte) float64 {
	if len(v) == 0 {
		return 0
	}
	var counts [256]int32
	var seen [4]uint64 // bytes present, to visit only their counts, in byte order
	for _, c := range v {
		counts[c]++
		seen[c>>6] |= 1 << (c & 63)
	}
	h := 0.0
	n := float64(len(v))
	// Most bytes of a random value occur once or twice: compute each
	// count's term once (the sum keeps its order, so the result is the same).
	var termOf [4]float64
	var known [4]bool
	for w, bits := range seen {
		for bits != 0 {
			c := w<<6 | mbits.TrailingZeros64(bits)
			bits &= bits - 1
			k := counts[c]
			if k < int32(len(termOf)) {
				if !known[k] {
					p := float64(k) / n
					termOf[k], known[k] = p*math.Log2(p), true
				}
				h -= termOf[k]
				continue
			}
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

var placeholders = []string{
	"example", "xxxx", "your_", "your-", "yourkey", "<", ">", "...", "****", "placeholder", "changeme", "change_me",
	"redacted", "dummy", "sample", "replace", "insert", "todo", "fixme", "abcdef", "12345", "54321", "fake", "${", "{{", "%s", "null",
	"none", "undefined", "secret_here", "_here", "here_", "foobar", "lorem",
}

// isPlaceholder reports documentation placeholders such as
// AKIAIOSFODNN7EXAMPLE or "your_api_key".
func isPlaceholder(v []byte) bool {
	return placeholderMatcher.contains(v)
}

// placeholderMatcher finds any of placeholders, ignoring ASCII case.
var placeholderMatcher = newMatcher(placeholders)

// awsSecretMemo shares the search for the value's end between hits.
func awsSecretMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	st, en, ok := assignedValueMemo(b, pe, false, false, &m.values)
	if !ok || en-st != 40 {
		return 0, 0, false
	}
	for _, c := range b[st:en] {
		if !inCharset(csB64, c) {
			return 0, 0, false
		}
	}
	return st, en, !isPlaceholder(b[st:en]) && !lowEntropy(b[st:en])
}

func mailchimp(b []byte, ps, pe int) (int, int, bool) {
	st := ps - 32
	if st < 0 {
		return 0, 0, false
	}
	for _, c := range b[st:ps] {
		if !isASCIIAlnum(c) {
			return 0, 0, false
		}
	}
	if lowEntropy(b[st:ps]) {
		return 0, 0, false
	}
	if st > 0 && isASCIIAlnum(b[st-1]) {
		return 0, 0, false
	}
	en := pe
	for en < len(b) && isDigit(b[en]) && en-pe < 2 {
		en++
	}
	return st, en, en > pe && tokenEnds(b, en, csAlnum)
}

// pemKey matches "-----BEGIN [X ]PRIVATE KEY[ BLOCK]-----" up to the END
// line (or the end of the base64 body), also inside JSON strings with \n.
// markerMemo holds the marker searches of one scan (see secretRule.find).
type markerMemo struct {
	pemEnd, puttyLines nextFinder
	// jwtSkip ends the first part of the last JWT-shaped run refused for a
	// reason every later "eyJ" inside that part shares (see jwtMemo).
	jwtSkip int
	// jwk*: the last JSON web key scan found no private member in
	// [jwkFrom, jwkNext); jwkClosed when it stopped at the object's '}'.
	jwkValid, jwkClosed bool
	jwkFrom, jwkNext    int
	// values and runs share the searches for value and body ends.
	values valueMemo
	runs   charsetRuns
}

// nextFinder finds the first occurrence of pat at or after a position,
// remembering what it searched: the hits of one rule come in increasing
// position, so a text of BEGIN headers without an END line is searched
// once in all rather than once per header.
type nextFinder struct {
	pat  string
	fold bool // ASCII case-insensitive; pat is lower case
	// No occurrence starts in [from, at) nor, when at < 0, in [from, to-len(pat)].
	valid    bool
	from, to int
	at       int
}

// next returns the first k >= p with pat at b[k:] and k+len(pat) <= limit,
// or -1. Calls with non-decreasing p cost linear time in all.
func (f *nextFinder) next(b []byte, p, limit int) int {
	if f.valid && p >= f.from {
		switch {
		case f.at >= p:
			if f.at+len(f.pat) <= limit {
				return f.at
			}
			return -1
		case f.at < 0 && limit <= f.to:
			return -1
		case f.at < 0:
			from := f.to - len(f.pat) + 1
			if p > from {
				from, f.from = p, p // [f.to-len+1, p) was never searched
			}
			k := f.search(b, from, limit)
			f.to, f.at = limit, k
			return k
		}
	}
	k := f.search(b, p, limit)
	f.valid, f.from, f.to, f.at = true, p, limit, k
	return k
}

func (f *nextFinder) search(b []byte, from, limit int) int {
	if from < 0 {
		from = 0
	}
	limit = min(limit, len(b))
	if from >= limit {
		return -1
	}
	var i int
	if f.fold {
		i = indexFold(b[from:limit], f.pat)
	} else {
		i = bytes.Index(b[from:limit], []byte(f.pat))
	}
	if i < 0 {
		return -1
	}
	return from + i
}

func pemKeyMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	lineEnd := pe
	for lineEnd < len(b) && lineEnd-pe < 40 && b[lineEnd] != '\n' && b[lineEnd] != '-' {
		lineEnd++
	}
	label := b[pe:lineEnd]
	if !containsFold(label, "private key") || !hasPrefixAt(b, lineEnd, "-----") {
		return 0, 0, false
	}
	hdrEnd := lineEnd + 5
	// Find the END marker within a bounded window.
	limit := hdrEnd + 16<<10
	if limit > len(b) {
		limit = len(b)
	}
	if k := m.pemEnd.next(b, hdrEnd, limit); k >= 0 {
		e := k + 9
		for e < limit && e-k < 60 && b[e] != '\n' {
			if hasPrefixAt(b, e, "-----") {
				return ps, e + 5, true
			}
			e++
		}
		return ps, e, true
	}
	// No END: take the base64 body.
	e := hdrEnd
	body := 0
	for e < limit {
		c := b[e]
		if inCharset(csB64, c) {
			body++
		} else if c != '\n' && c != '\r' && c != ' ' && c != '\\' && c != ':' && c != '-' && c != ',' {
			break
		}
		e++
	}
	return ps, e, body >= 64
}

func puttyKeyMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	k := m.puttyLines.next(b, pe, pe+4096+len("private-lines:")) // at most 4096 bytes on
	if k < 0 {
		return 0, 0, false
	}
	k -= pe
	e := pe + k + len("private-lines:")
	for e < len(b) && (inCharset(csB64, b[e]) || b[e] == '\n' || b[e] == '\r' || b[e] == ' ') {
		e++
	}
	return ps, e, true
}

func hasPrefixAt(b []byte, i int, p string) bool {
	return i+len(p) <= len(b) && string(b[i:i+len(p)]) == p
}

func indexFold(b []byte, kw string) int {
	for i := 0; i+len(kw) <= len(b); i++ {
		k := 0
		for k < len(kw) && lowerASCII(b[i+k]) == kw[k] {
			k++
		}
		if k == len(kw) {
			return i
		}
	}
	return -1
}

// jwtMemo matches header.payload.signature where header and payload are
// base64url JSON objects ("eyJ" is base64 of `{"`), remembering, in m, where a refused run's first part ends:
// an "eyJ" starting inside it reads the same parts after it, so it is
// refused for the same reason without reading them again (a text of "eyJ="
// repeated was quadratic).
func jwtMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	if ps < m.jwtSkip {
		return 0, 0, false
	}
	if ps > 0 && (isASCIIAlnum(b[ps-1]) || b[ps-1] == '_' || b[ps-1] == '-') {
		return 0, 0, false
	}
	e := pe
	parts, partLen := 1, 0
	lens := [3]int{}
	for e < len(b) {
		c := b[e]
		if isASCIIAlnum(c) || c == '_' || c == '-' || c == '=' {
			partLen++
			e++
			continue
		}
		if c == '.' && parts < 3 && e+1 < len(b) && (isASCIIAlnum(b[e+1]) || b[e+1] == '_' || b[e+1] == '-') {
			lens[parts-1] = partLen
			parts++
			partLen = 0
			e++
			continue
		}
		break
	}
	lens[parts-1] = partLen
	p0end := pe + lens[0] // the end of the first part
	if parts < 3 || lens[0] < 10 || lens[1] < 10 || lens[2] < 16 {
		m.jwtSkip = p0end
		return 0, 0, false
	}
	// Payload must start with eyJ too ('{"').
	p1 := ps + 3 + lens[0] + 1
	if !hasPrefixAt(b, p1, "eyJ") {
		m.jwtSkip = p0end
		return 0, 0, false
	}
	if isPlaceholder(b[ps:e]) {
		if isPlaceholder(b[p0end:e]) {
			m.jwtSkip = p0end
		}
		return 0, 0, false
	}
	return ps, e, true
}

var connSchemes = []string{
	"postgres", "postgresql", "mysql", "mariadb", "mongodb", "mongodb+srv", "redis", "rediss", "amqp", "amqps",
	"mssql", "sqlserver", "oracle", "ftp", "ftps", "sftp", "smtp", "smtps", "imap", "imaps", "ldap", "ldaps",
	"http", "https", "ssh", "git", "jdbc:postgresql", "jdbc:mysql", "jdbc:sqlserver", "clickhouse", "cockroachdb",
	"nats", "kafka", "couchdb", "neo4j", "bolt", "rabbitmq", "memcached", "elasticsearch", "svn", "telnet", "s3",
}

// urlCreds matches scheme://user:password@host and reports the password.
func urlCreds(b []byte, ps, pe int) (int, int, bool) {
	// Scheme before "://".
	k := ps
	for k > 0 && (isASCIIAlnum(b[k-1]) || b[k-1] == '+' || b[k-1] == ':' || b[k-1] == '.' || b[k-1] == '-') && ps-k < 30 {
		k--
	}
	scheme := b[k:ps]
	known := false
	for _, sc := range connSchemes {
		if len(scheme) == len(sc) && containsFold(scheme, sc) {
			known = true
			break
		}
	}
	if !known && (len(scheme) < 2 || !isLetter(scheme[0])) {
		return 0, 0, false
	}
	// userinfo up to the last '@' of the authority; password after its first ':'.
	colon, at := -1, -1
	e := pe
	for e < len(b) && e-pe < 256 {
		c := b[e]
		if c == '@' {
			at = e
		}
		if c == '/' || c == ' ' || c == '\n' || c == '"' || c == '\'' || c == '>' || c == '<' || c == '`' || c == '\t' || c == '?' || c == '#' {
			break
		}
		e++
	}
	if at < 0 {
		return 0, 0, false
	}
	for k := pe; k < at; k++ {
		if b[k] == ':' {
			colon = k
			break
		}
	}
	if colon < 0 || at <= colon+1 || colon == pe {
		return 0, 0, false
	}
	pw := b[colon+1 : at]
	if isPlaceholder(pw) || isVarRef(pw) || string(pw) == "password" || string(pw) == "pass" {
		return 0, 0, false
	}
	return colon + 1, at, true
}

// azureAccountKeyMemo shares the search for the key's end between hits.
func azureAccountKeyMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	e := min(m.runs.end(b, csB64, pe), pe+91) // longer is refused below
	n := e - pe
	return pe, e, n >= 80 && n <= 90 && !isPlaceholder(b[pe:e])
}

// azureClientSecret: [A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}.
func azureClientSecret(b []byte, ps, pe int) (int, int, bool) {
	st := ps - 4
	if st < 0 || !isDigit(b[ps-1]) {
		return 0, 0, false
	}
	az := func(c byte) bool { return isASCIIAlnum(c) || c == '_' || c == '~' || c == '.' || c == '-' }
	for _, c := range b[st:ps] {
		if !az(c) {
			return 0, 0, false
		}
	}
	if st > 0 && az(b[st-1]) {
		return 0, 0, false
	}
	e := pe
	for e < len(b) && az(b[e]) {
		e++
	}
	n := e - pe
	return st, e, n >= 31 && n <= 34
}

// azureSASMemo shares the search for the signature's end between hits.
func azureSASMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	e := min(m.runs.end(b, csB64Pct, pe), pe+101) // longer is refused below
	n := e - pe
	if n < 40 || n > 100 || !containsFold(b[max(0, ps-300):ps], "sv=") {
		return 0, 0, false
	}
	return pe, e, true
}

func telegram(b []byte, ps, pe int) (int, int, bool) {
	st := ps
	for st > 0 && isDigit(b[st-1]) && ps-st < 11 {
		st--
	}
	if ps-st < 8 || ps-st > 10 || (st > 0 && isASCIIAlnum(b[st-1])) {
		return 0, 0, false
	}
	e := pe
	for e < len(b) && inCharset(csToken, b[e]) {
		e++
	}
	return st, e, e-pe == 33
}

func terraform(b []byte, ps, pe int) (int, int, bool) {
	st := ps
	for st > 0 && isASCIIAlnum(b[st-1]) {
		st--
	}
	if ps-st != 14 {
		return 0, 0, false
	}
	e := pe
	for e < len(b) && inCharset(csToken, b[e]) {
		e++
	}
	return st, e, e-pe >= 60 && e-pe <= 70
}

func xBearer(b []byte, ps, pe int) (int, int, bool) {
	e := pe
	for e < len(b) && e-pe <= 200 && (isASCIIAlnum(b[e]) || b[e] == '%' || b[e] == '-' || b[e] == '_' || b[e] == '=') {
		e++
	}
	return ps, e, e-pe >= 40 && e-pe <= 200 && !lowEntropy(b[pe:e])
}

// bearer: "Bearer <token>" with a random-looking token.
func bearer(b []byte, ps, pe int) (int, int, bool) {
	if ps > 0 && isASCIIAlnum(b[ps-1]) {
		return 0, 0, false
	}
	for pe < len(b) && (b[pe] == '"' || b[pe] == '\'' || b[pe] == ' ') {
		pe++
	}
	e := pe
	for e < len(b) && (inCharset(csTokenDot, b[e]) || b[e] == '~' || b[e] == '+' || b[e] == '/' || b[e] == '=') {
		e++
	}
	v := b[pe:e]
	if len(v) < 16 || len(v) > 4096 || isPlaceholder(v) || entropy(v) < 3.5 || !mixedClasses(v) {
		return 0, 0, false
	}
	return pe, e, true
}

func basicAuth(b []byte, ps, pe int) (int, int, bool) {
	if ps == 0 || !(b[ps-1] == ' ' || b[ps-1] == ':' || b[ps-1] == '"' || b[ps-1] == '\'') || !containsFold(b[max(0, ps-40):ps], "auth") {
		return 0, 0, false
	}
	e := pe
	for e < len(b) && inCharset(csB64, b[e]) {
		e++
	}
	v := b[pe:e]
	if len(v) < 8 || isPlaceholder(v) {
		return 0, 0, false
	}
	return pe, e, true
}

// mixedClasses reports whether v mixes at least two of upper, lower, digit.
func mixedClasses(v []byte) bool {
	var up, lo, di int
	for _, c := range v {
		switch {
		case 'A' <= c && c <= 'Z':
			up = 1
		case 'a' <= c && c <= 'z':
			lo = 1
		case isDigit(c):
			di = 1
		}
	}
	return up+lo+di >= 2
}

// isVarRef reports values that reference a variable rather than hold a
// secret: $VAR, ${VAR}, %VAR%, {{ var }}, <var>, env lookups, code calls.
func isVarRef(v []byte) bool {
	if len(v) == 0 {
		return true
	}
	switch v[0] {
	case '$', '%', '<', '{', '[', '(', '@', '&', '*':
		return true
	}
	// strings.EqualFold of the first len(p) bytes with an ASCII prefix is
	// an ASCII case-insensitive comparison: a non-ASCII rune there would
	// leave fewer runes than p has.
	for _, p := range varRefPrefixes {
		if len(v) >= len(p) && lowerASCII(v[0]) == p[0] && hasPrefixFold(v, p) {
			return true
		}
	}
	return false
}

var varRefPrefixes = []string{"env", "getenv", "process.", "os.", "config.", "settings.", "secrets.", "vault:", "self.", "this.", "args.", "request."}

// hasPrefixFold reports whether v starts with the ASCII-lower p, ignoring
// ASCII case.
func hasPrefixFold(v []byte, p string) bool {
	if len(v) < len(p) {
		return false
	}
	for k := 0; k < len(p); k++ {
		if lowerASCII(v[k]) != p[k] {
			return false
		}
	}
	return true
}

// identifier words that make a keyword assignment not a secret.
var genericStop = []string{
	"hash", "sha", "md5", "checksum", "digest", "uuid", "guid", "public", "length", "size", "file", "path", "name",
	"type", "format", "url", "expire", "timeout", "field", "policy", "count", "max", "min", "id_", "_id", "prompt",
	"label", "hint", "reset", "forgot", "confirm", "strength", "tokenizer", "tokens", "_len", "header", "display",
	"keyboard", "keyword", "keys", "monkey", "turkey", "donkey", "hockey", "jockey", "whiskey", "passage", "passenger",
	"compass", "bypass", "pass_through", "passthrough", "class", "grass", "mass", "glass", "brass", "assign",
	"secretary", "tokenize", "key_id", "keyid", "keyspace", "keystore_type", "keyfile", "key_file",
}

// genericHit is a keyword hit with its identifier [is, ie) and the value
// [st, en) assigned to it, before the value checks.
type genericHit struct {
	ks, is, ie, st, en int32
	password           bool
}

// genericValue and genericVerify verify "identifier op value" around a
// keyword at [ks, ke): the keyword must sit inside an identifier, followed
// by an assignment operator and a value that is neither a variable
// reference nor a placeholder and, for non-password keywords,
// random-looking. Every check is a pure predicate, so they run cheapest
// first: most keyword hits in prose fail at the assignment operator, before
// the stop-word and entropy checks.
//
// genericValue is the first half: the identifier
// around the keyword at [ks, ke) and the value assigned to it. Its cost is
// bounded by the identifier's length; m (may be nil) shares the search for
// a bare value's end between hits.
func genericValue(b []byte, ks, ke int, m *valueMemo) (genericHit, bool) {
	// Identifier bounds.
	is := ks
	for is > 0 && isIdentByte(b[is-1]) && ks-is < 40 {
		is--
	}
	ie := ke
	for ie < len(b) && isIdentByte(b[ie]) && ie-ke < 40 {
		ie++
	}
	ident := b[is:ie]
	kw := b[ks:ke]
	if len(kw) <= 4 {
		// Short keywords must end the identifier and start a word in it.
		if ie != ke || (ks > is && isLetter(b[ks-1]) && !(isUpper(b[ks]) && !isUpper(b[ks-1]))) {
			return genericHit{}, false
		}
	}
	// Most hits have no assignment after the identifier: find out before
	// the costlier password and flag tests. assignedValueMemo accepts more
	// with password and flag set, never less, so a refusal here is final.
	if _, _, ok := assignedValueMemo(b, ie, true, true, m); !ok {
		return genericHit{}, false
	}
	password := containsFold(ident, "pass") || containsFold(ident, "pw") || containsFold(ident, "psw") ||
		containsFold(ident, "pssw") || containsFold(kw, "contrase") || containsFold(kw, "senha")
	// Command-line flags and macro definitions take a value after a space.
	flag := len(ident) > 0 && ident[0] == '-' || precededByWord(b, is, "define") || precededByWord(b, is, "set") ||
		precededByWord(b, is, "global")
	st, en, ok := assignedValueMemo(b, ie, password, flag, m)
	if !ok {
		return genericHit{}, false
	}
	return genericHit{ks: int32(ks), is: int32(is), ie: int32(ie), st: int32(st), en: int32(en), password: password}, true
}

// genericVerify is the second half (see genericValue): the checks on the
// value v assigned to ident. Its cost is linear in len(v) (at most 4096).
func genericVerify(v, ident []byte, password bool) (string, float64, bool) {
	if len(v) < 4 || len(v) > 4096 || isVarRef(v) || allSame(v) || isCodeValue(v) || isStopValue(v) {
		return "", 0, false
	}
	if password {
		if len(v) < 6 || isWordsOnly(v) {
			return "", 0, false
		}
	} else if len(v) < 12 || isWordsOnly(v) {
		return "", 0, false
	}
	if isPlaceholder(v) || genericStopMatcher.contains(ident) || containsFold(ident, "author") && !containsFold(ident, "authoriz") {
		return "", 0, false
	}
	if password {
		if entropy(v) < 2.3 {
			return "", 0, false
		}
		return TypePassword, 0.8, true
	}
	if e := entropy(v); e < 3.2 || !(allClasses(v) || len(v) >= 20 && e >= 3.5 && mixedClasses(v)) {
		return "", 0, false
	}
	return TypeGenericSecret, 0.7, true
}

// genericStopMatcher finds any genericStop word in an identifier.
var genericStopMatcher = newMatcher(genericStop)

// isStopValue reports values that are words rather than secrets ("true",
// "required", "password", ...), in any case (Unicode lower-casing, as
// strings.ToLower does).
func isStopValue(v []byte) bool {
	var buf [8]byte
	if len(v) > len(buf) || !isASCII(unsafeString(v)) {
		if len(v) > 3*len(buf) || isASCII(unsafeString(v)) {
			return false // no stop word is longer than 8 letters, and 3 bytes at most fold to 1
		}
		return stopValue(strings.ToLower(string(v)))
	}
	for i, c := range v {
		buf[i] = lowerASCII(c)
	}
	return stopValue(unsafeString(buf[:len(v)]))
}

func stopValue(lv string) bool {
	switch lv {
	case "true", "false", "yes", "no", "on", "off", "required", "optional", "string", "str", "int", "bool",
		"password", "secret", "token", "hidden", "masked", "empty", "value", "admin", "user", "default", "test",
		"keep", "none", "null", "nil", "your", "the", "is", "was", "for":
		return true
	}
	return false
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// allClasses reports whether v has upper case, lower case and digits.
func allClasses(v []byte) bool {
	var up, lo, di bool
	for _, c := range v {
		switch {
		case isUpper(c):
			up = true
		case isLower(c):
			lo = true
		case isDigit(c):
			di = true
		}
	}
	return up && lo && di
}

// isCodeValue reports values that are code rather than literals: calls
// ("getpass.getpass()") and hex integer literals ("0xdeadbeef").
func isCodeValue(v []byte) bool {
	if len(v) > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X') {
		for _, c := range v[2:] {
			if !isHexByte(c) {
				return false
			}
		}
		return true
	}
	for _, c := range v {
		if c == '(' {
			return true
		}
	}
	return false
}

// precededByWord reports whether word (ASCII, any case) and spaces come
// right before position i.
func precededByWord(b []byte, i int, word string) bool {
	j := i
	for j > 0 && (b[j-1] == ' ' || b[j-1] == '\t') {
		j--
	}
	if j == i || j < len(word) {
		return false
	}
	// (strings.EqualFold with an ASCII word: see isVarRef.)
	return hasPrefixFold(b[j-len(word):j], word) && (j == len(word) || !isASCIIAlnum(b[j-len(word)-1]))
}

func isIdentByte(c byte) bool { return isASCIIAlnum(c) || c == '_' || c == '-' || c == '.' }

func allSame(v []byte) bool {
	for _, c := range v[1:] {
		if c != v[0] {
			return false
		}
	}
	return true
}

// isWordsOnly reports lower-case English-looking values ("changeit",
// "my-secret-name") that are more likely names than secrets: letters and
// separators only, a single case.
func isWordsOnly(v []byte) bool {
	lower, upper := 0, 0
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z':
			lower++
		case 'A' <= c && c <= 'Z':
			upper++
		case c == '_' || c == '-' || c == '.' || c == ' ':
		default:
			return false
		}
	}
	return lower == 0 || upper == 0
}

// assignedValue finds "op value" after an identifier ending at i.
func assignedValue(b []byte, i int) (int, int, bool) {
	return assignedValueMemo(b, i, false, false, nil)
}

// maxValueLen is the longest value an assignment is searched for; the bare
// value scan stops one byte after it.
const maxValueLen = 4096

// valueMemo remembers the last bare-value end found, so that the keyword
// hits of "password=password=..." (every value ending at the same
// delimiter) find it once between them rather than once each, and the last
// run of trailing sentence punctuation, for the same reason.
type valueMemo struct {
	set          bool
	from, delim  int // b[from:delim] holds no bare-value delimiter; delim is one, or len(b)
	punct        bool
	pfrom, punto int // b[pfrom:punto] is all '.' or '?', and b[pfrom-1] is neither (or pfrom == 0)
}

// bareDelim reports the bytes that end a bare value.
func bareDelim(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';' || c == ',' || c == ')' || c == '"' || c == '\'' || c == '<' || c == '}' || c == ']'
}

// bareEnd returns the end of the bare value starting at st: the first
// delimiter, at most maxValueLen+1 bytes on, or len(b).
func (m *valueMemo) bareEnd(b []byte, st int) int {
	if m == nil {
		e := st
		for e < len(b) && e-st <= maxValueLen && !bareDelim(b[e]) {
			e++
		}
		return e
	}
	if !m.set || st < m.from || st > m.delim {
		e := st
		for e < len(b) && !bareDelim(b[e]) {
			e++
		}
		m.set, m.from, m.delim = true, st, e
	}
	return min(m.delim, st+maxValueLen+1)
}

// trimPunct moves e back over trailing '.' and '?', not before st.
func (m *valueMemo) trimPunct(b []byte, st, e int) int {
	if m == nil {
		for e > st && (b[e-1] == '.' || b[e-1] == '?') {
			e--
		}
		return e
	}
	if e == st || b[e-1] != '.' && b[e-1] != '?' {
		return e
	}
	if m.punct && e > m.punto && e >= m.pfrom {
		// A later end in the same run: extend the run forward.
		k := m.punto
		for k < e && (b[k] == '.' || b[k] == '?') {
			k++
		}
		if k == e {
			m.punto = e
		}
	}
	if !m.punct || e < m.pfrom || e > m.punto {
		k := e
		for k > 0 && (b[k-1] == '.' || b[k-1] == '?') {
			k--
		}
		m.punct, m.pfrom, m.punto = true, k, e
	}
	return max(st, m.pfrom)
}

var typeNames = []string{"str", "string", "String", "int", "bool", "bytes", "&str", "[]byte", "char*", "const char*", "Optional[str]"}

// typeNameStart marks the first bytes of typeNames.
var typeNameStart = func() (t [256]bool) {
	for _, n := range typeNames {
		t[n[0]] = true
	}
	return t
}()

// assignedValueMemo skips closing quotes, spaces and one assignment operator
// (=, :, :=, =>, ->, ==, !=, a comma before a quoted argument, and for
// passwords the words "is" and "by" or a quoted value after a space; for
// flags any space) and returns the value, quoted or bare.
func assignedValueMemo(b []byte, i int, password, flag bool, m *valueMemo) (int, int, bool) {
	j := i
	for j < len(b) && (b[j] == '"' || b[j] == '\'' || b[j] == ']' || b[j] == '`' || b[j] == ')') && j-i < 2 {
		j++
	}
	sp := j
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		j++
	}
	spaced := j > sp
	if j >= len(b) {
		return 0, 0, false
	}
	switch {
	case hasPrefixAt(b, j, ":="), hasPrefixAt(b, j, "=>"), hasPrefixAt(b, j, "->"), hasPrefixAt(b, j, "=="), hasPrefixAt(b, j, "!="):
		j += 2
	case b[j] == '=' || b[j] == ':':
		j++
	case b[j] == ',' || b[j] == '(':
		// setPassword("..."), setopt(h, CURLOPT_PASSWORD, "...").
		k := j + 1
		for k < len(b) && b[k] == ' ' {
			k++
		}
		if k >= len(b) || (b[k] != '"' && b[k] != '\'') {
			return 0, 0, false
		}
		j = k
	case hasPrefixAt(b, j, "is ") || hasPrefixAt(b, j, "IS ") || password && (hasPrefixAt(b, j, "by ") || hasPrefixAt(b, j, "BY ")):
		// "my api key is ...", "IDENTIFIED BY '...'".
		j += 3
	case spaced && (flag || password && (b[j] == '"' || b[j] == '\'')):
		// --password value, PASSWORD 'value'.
	default:
		return 0, 0, false
	}
	for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
		j++
	}
	// Type annotations: "passwd: str = ...".
	for _, t := range typeNames {
		if j >= len(b) || !typeNameStart[b[j]] {
			break // no type name starts here
		}
		if hasPrefixAt(b, j, t) {
			k := j + len(t)
			for k < len(b) && b[k] == ' ' {
				k++
			}
			if k < len(b) && b[k] == '=' && (k+1 >= len(b) || b[k+1] != '=') {
				j = k + 1
				for j < len(b) && b[j] == ' ' {
					j++
				}
			}
			break
		}
	}
	// Optional string prefixes and quotes.
	if j < len(b) && (b[j] == 'r' || b[j] == 'b' || b[j] == 'f' || b[j] == 'u' || b[j] == 'L' || b[j] == '@') && j+1 < len(b) && (b[j+1] == '"' || b[j+1] == '\'') {
		j++
	}
	if j >= len(b) {
		return 0, 0, false
	}
	if q := b[j]; q == '"' || q == '\'' || q == '`' {
		st := j + 1
		e := st
		for e < len(b) && b[e] != q && b[e] != '\n' && e-st <= 4096 {
			if b[e] == '\\' {
				if e+1 < len(b) && b[e+1] == 'n' {
					break
				}
				e++
			}
			e++
		}
		if e > len(b) {
			e = len(b)
		}
		if e >= len(b) || b[e] != q {
			// Unterminated on this line: accept long values (multi-line literals).
			return st, e, e-st >= 16
		}
		return st, e, e > st
	}
	st := j
	e := m.bareEnd(b, st)
	// Trailing sentence punctuation is not part of a bare value.
	e = m.trimPunct(b, st, e)
	return st, e, e > st
}
