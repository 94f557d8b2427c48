package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bulwark-ai/bulwark/internal/app"
	"github.com/bulwark-ai/bulwark/internal/app/core"
	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/envoy"
)

// headerFlags collects repeated -H 'name: value' flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }
func (h headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("header %q is not 'name: value'", v)
	}
	h[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	return nil
}

// checkResult is what `bulwark check` prints: the decision as Envoy would
// enforce it.
type checkResult struct {
	Allowed              bool              `json:"allowed"`
	HTTPStatus           int               `json:"http_status,omitempty"`
	Reason               string            `json:"reason,omitempty"`
	DecisionID           string            `json:"decision_id,omitempty"`
	Headers              map[string]string `json:"headers,omitempty"`
	HeadersToRemove      []string          `json:"request_headers_to_remove,omitempty"`
	ResponseHeadersToAdd map[string]string `json:"response_headers_to_add,omitempty"`
	Body                 string            `json:"body,omitempty"`
	DynamicMetadata      map[string]any    `json:"dynamic_metadata,omitempty"`
}

func runCheck(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "address of a running bulwark serve (empty: evaluate in-process)")
	policyDir := fs.String("policy-dir", "", "in-process: policy directory (default: embedded policies)")
	query := fs.String("policy-query", "bulwark/decision", "in-process: decision rule path")
	regoV0 := fs.Bool("rego-v0", false, "in-process: parse policies with pre-1.0 Rego syntax")
	method := fs.String("method", "GET", "HTTP method")
	path := fs.String("path", "/", "request path with query string")
	host := fs.String("host", "", "host/authority (default api.example.com)")
	body := fs.String("body", "", "request body, or @FILE to read it from a file")
	packAsBytes := fs.Bool("pack-as-bytes", false, "send the body as raw_body (Envoy's pack_as_bytes)")
	principal := fs.String("source-principal", "", "peer identity Envoy reports (mTLS SAN / SPIFFE ID)")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline for the check")
	keysFile := fs.String("keys-file", "", "in-process: API keys file")
	pepperFile := fs.String("pepper-file", "", "in-process: API key pepper file (or BULWARK_KEY_PEPPER)")
	jwksURL := fs.String("jwks-url", "", "in-process: JWKS URL")
	jwtKeysFile := fs.String("jwt-keys-file", "", "in-process: static JWT keys file")
	jwtIssuer := fs.String("jwt-issuer", "", "in-process: required JWT iss (unset: not checked)")
	jwtAudience := fs.String("jwt-audience", "", "in-process: required JWT aud (unset: not checked)")
	var tlsFlags clientTLS
	fs.StringVar(&tlsFlags.CAFile, "tls-ca", "", "with --addr: connect over TLS, trusting this CA bundle (PEM)")
	fs.StringVar(&tlsFlags.CertFile, "tls-cert", "", "with --addr: client certificate (PEM) for a server that requires mTLS")
	fs.StringVar(&tlsFlags.KeyFile, "tls-key", "", "with --addr: the client certificate's private key (PEM)")
	fs.StringVar(&tlsFlags.ServerName, "tls-server-name", "", "with --addr: name to verify the server's certificate against (default: the host in --addr)")
	headers := headerFlags{}
	fs.Var(headers, "H", "request header 'name: value' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	var bodyBytes []byte
	if strings.HasPrefix(*body, "@") {
		b, err := os.ReadFile(strings.TrimPrefix(*body, "@"))
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		bodyBytes = b
	} else if *body != "" {
		bodyBytes = []byte(*body)
	}
	req := envoy.NewCheckRequest(envoy.HTTPRequest{
		Method: strings.ToUpper(*method), Path: *path, Host: *host, Headers: headers,
		Body: bodyBytes, PackAsBytes: *packAsBytes, SourcePrincipal: *principal,
	})

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var resp *authv3.CheckResponse
	var err error
	if *addr != "" {
		var creds credentials.TransportCredentials
		if creds, err = tlsFlags.credentials(); err != nil {
			return &exitError{2, err}
		}
		resp, err = remoteCheck(ctx, *addr, creds, req)
	} else {
		cfg := config.Default()
		cfg.PolicyDir, cfg.PolicyQuery, cfg.RegoV0 = *policyDir, *query, *regoV0
		cfg.KeysFile, cfg.PepperFile, cfg.JWKSURL, cfg.JWTKeysFile = *keysFile, *pepperFile, *jwksURL, *jwtKeysFile
		cfg.JWTIssuer, cfg.JWTAudience = *jwtIssuer, *jwtAudience
		// A local, one-shot check of a token: what is unset is not checked
		// (the identity stage warns), as the operator asked.
		cfg.JWTInsecureSkipIssuerAudience = *jwtIssuer == "" || *jwtAudience == ""
		resp, err = localCheck(ctx, cfg, req, stderr)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(renderCheck(resp))
}

func remoteCheck(ctx context.Context, addr string, creds credentials.TransportCredentials, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return resp, nil
}

// clientTLS is how check reaches a server started with --tls-cert (and,
// for mTLS, --tls-client-ca): the CA that signed the server's certificate,
// and the client's own certificate when the server asks for one.
type clientTLS struct {
	CAFile, CertFile, KeyFile, ServerName string
}

// credentials returns plaintext credentials when no TLS flag is set, and
// TLS 1.2+ ones otherwise.
func (c clientTLS) credentials() (credentials.TransportCredentials, error) {
	if c == (clientTLS{}) {
		return insecure.NewCredentials(), nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

// localCheck decides req in-process with the core serve builds (core.New,
// the ext_authz door as app wires it), from the subset of serve's
// configuration that check takes as flags. It differs from serve only where
// a one-shot check must: no metrics, no audit, no tracing, no sealed
// principal for ext_proc, and RateLimit headers always shown.
func localCheck(ctx context.Context, cfg config.Config, req *authv3.CheckRequest, stderr io.Writer) (*authv3.CheckResponse, error) {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.RateLimitHeaders = true // show the RateLimit headers a decision with limits carries
	c, err := core.New(ctx, cfg, core.Deps{Logger: logger, Pepper: os.Getenv("BULWARK_KEY_PEPPER")})
	if err != nil {
		return nil, configExit(err)
	}
	defer c.Close()
	return app.NewExtAuthz(c, cfg, nil, nil).Check(ctx, req)
}

func renderCheck(resp *authv3.CheckResponse) checkResult {
	var r checkResult
	r.Reason = resp.GetStatus().GetMessage()
	if md := resp.GetDynamicMetadata(); md != nil {
		r.DynamicMetadata = md.AsMap()
		if id, ok := r.DynamicMetadata["decision_id"].(string); ok {
			r.DecisionID = id
		}
	}
	if ok := resp.GetOkResponse(); resp.GetStatus().GetCode() == 0 {
		r.Allowed = true
		r.Headers = map[string]string{}
		for _, h := range ok.GetHeaders() {
			r.Headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		r.HeadersToRemove = ok.GetHeadersToRemove()
		r.ResponseHeadersToAdd = map[string]string{}
		for _, h := range ok.GetResponseHeadersToAdd() {
			r.ResponseHeadersToAdd[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		return r
	}
	denied := resp.GetDeniedResponse()
	r.HTTPStatus = int(denied.GetStatus().GetCode())
	if r.HTTPStatus == 0 {
		r.HTTPStatus = 403
	}
	r.Headers = map[string]string{}
	for _, h := range denied.GetHeaders() {
		r.Headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	r.Body = denied.GetBody()
	if r.Reason == "" {
		r.Reason = "denied"
	}
	return r
}
