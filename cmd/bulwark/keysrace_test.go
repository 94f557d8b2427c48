package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/bulwark-ai/bulwark/internal/api"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/policies"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
	testfixture "github.com/bulwark-ai/bulwark/test/fixture"
)

// asBulwarkEnv makes the test binary run bulwark's own main with its
// arguments, so a test can start `bulwark keys ...` as separate processes.
const asBulwarkEnv = "BULWARK_TEST_RUN_AS_BULWARK"

func TestMain(m *testing.M) {
	if os.Getenv(asBulwarkEnv) == "1" {
		main() // exits non-zero on error
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestKeysFileRevocationSurvivesConcurrentCreate races `bulwark keys
// create` processes against AdminService.RevokeKey on one keys file,
// hundreds of times: every revocation RevokeKey acknowledged must still be
// in the file (and in force) at the end, and every created key too. Before
// the writers locked the file, a create that read the file before a
// revocation and wrote it after undid the revocation.
func TestKeysFileRevocationSurvivesConcurrentCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hundreds of processes")
	}
	t.Parallel()
	const rounds, workers = 200, 4
	var victims []testfixture.Key
	for i := range rounds {
		victims = append(victims, testfixture.Key{ID: fmt.Sprintf("v%d", i), Roles: []string{"user"}, Tenant: "acme"})
	}
	auth, secrets, keysFile := testfixture.Authenticator(t, keysTestPepper,
		append(victims, testfixture.Key{ID: "ops", Roles: []string{api.DefaultAdminRole, api.DefaultCrossTenantRole}})...)
	pepperFile := keysPepperFile(t, t.TempDir())

	engine, err := policy.New(context.Background(), policy.Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := api.NewAdmin(api.Config{}, auth, engine, nil, api.Keys{File: keysFile, Reload: auth.ReloadKeys}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	bulwarkv1.RegisterAdminServiceServer(srv, admin)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := bulwarkv1.NewAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", secrets["ops"])

	start := time.Now()
	work := make(chan int)
	errs := make(chan error, rounds)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range work {
				// A create process and a revocation at once; the jitter moves
				// the revocation across the child's read-modify-write.
				cmd := exec.CommandContext(ctx, os.Args[0], "keys", "create", "--keys-file", keysFile,
					"--pepper-file", pepperFile, "--id", fmt.Sprintf("c%d", i), "--roles", "user")
				cmd.Env = append(os.Environ(), asBulwarkEnv+"=1")
				if err := cmd.Start(); err != nil {
					errs <- err
					continue
				}
				time.Sleep(time.Duration(rand.IntN(12000)) * time.Microsecond)
				r, err := client.RevokeKey(ctx, &bulwarkv1.RevokeKeyRequest{Id: fmt.Sprintf("v%d", i)})
				if err == nil && (len(r.GetKeys()) != 1 || r.GetKeys()[0].GetStatus() != bulwarkv1.KeyStatus_KEY_STATUS_REVOKED) {
					err = fmt.Errorf("RevokeKey v%d answered %v", i, r)
				}
				if err != nil {
					errs <- fmt.Errorf("revoke v%d: %w", i, err)
				}
				if err := cmd.Wait(); err != nil {
					errs <- fmt.Errorf("keys create c%d: %w", i, err)
				}
			}
		})
	}
	for i := range rounds {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d creates raced against %d revocations in %s", rounds, rounds, time.Since(start))

	kf, err := identity.ReadKeysFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	lost, missing := 0, 0
	for i := range rounds {
		if r := kf.Find(fmt.Sprintf("v%d", i)); r == nil || r.RevokedAt.IsZero() {
			lost++
		}
		if kf.Find(fmt.Sprintf("c%d", i)) == nil {
			missing++
		}
	}
	if lost > 0 || missing > 0 {
		t.Fatalf("%d of %d acknowledged revocations undone, %d of %d created keys lost", lost, rounds, missing, rounds)
	}
	if err := auth.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	for i := range rounds {
		id := fmt.Sprintf("v%d", i)
		if p := auth.Authenticate(context.Background(), identity.Request{APIKey: secrets[id]}); p.Error != identity.ReasonRevoked {
			t.Fatalf("revoked key %s authenticates as %+v", id, p)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(keysFile), filepath.Base(keysFile)+".lock")); err != nil {
		t.Errorf("no lock file beside the keys file: %v", err)
	}
}
