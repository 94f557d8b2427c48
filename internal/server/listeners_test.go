package server

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type okAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (okAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{}, nil
}

// TestListenersSeparate: what is registered on GRPC() is served on Envoy's
// listener only, and the API listener serves health but not Envoy's
// services; without APIAddr there is no API listener at all.
func TestListenersSeparate(t *testing.T) {
	t.Parallel()
	s := New(Config{GRPCAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", ShutdownGrace: time.Second,
		MaxRecvMsgBytes: 1 << 20, MaxSendMsgBytes: 1 << 20, MaxConcurrentStreams: 100}, nil, nil)
	authv3.RegisterAuthorizationServer(s.GRPC(), okAuthz{})
	startServing(t, s)
	if s.APIAddr() == "" || s.APIAddr() == s.GRPCAddr() {
		t.Fatalf("API listener %q, Envoy's %q", s.APIAddr(), s.GRPCAddr())
	}
	dial := func(addr string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	envoy, api := dial(s.GRPCAddr()), dial(s.APIAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(envoy).Check(ctx, &authv3.CheckRequest{}); err != nil {
		t.Errorf("Check on Envoy's listener: %v", err)
	}
	if _, err := authv3.NewAuthorizationClient(api).Check(ctx, &authv3.CheckRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("Check on the API listener: %v, want Unimplemented", err)
	}
	for name, conn := range map[string]*grpc.ClientConn{"envoy": envoy, "api": api} {
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health on the %s listener: %v", name, err)
		}
	}

	off := New(Config{GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}, nil, nil)
	if off.API() != nil {
		t.Error("an API server without APIAddr")
	}
}
