package main

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
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
// create` processes against AdminService.RevokeKey on one keys file, 200
// times: every revocation RevokeKey acknowledged must still be in the file
// (and in force), and every created key too. Before the writers locked the
// file, a create that read the file before a revocation and wrote it after
// undid the revocation. The file is reset every few rounds so that it stays
// small and the test fast (under -race too).
func TestKeysFileRevocationSurvivesConcurrentCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hundreds of processes")
	}
	t.Parallel()
	const batches, perBatch, workers = 25, 8, 4
	auth, secrets, keysFile := testfixture.Authenticator(t, keysTestPepper,
		testfixture.Key{ID: "ops", Roles: []string{api.DefaultAdminRole, api.DefaultCrossTenantRole}})
	pepperFile := keysPepperFile(t, t.TempDir())
	engine, err := policy.New(context.Background(), policy.Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := api.NewAdmin(api.Config{}, auth, engine, nil, api.Keys{File: keysFile, Reload: auth.ReloadKeys}, nil, nil, nil)
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-api-key", secrets["ops"])
	ops, _ := identity.ReadKeysFile(keysFile)

	create := func(id string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, os.Args[0], "keys", "create", "--keys-file", keysFile,
			"--pepper-file", pepperFile, "--id", id, "--roles", "user")
		// A race-built child would sleep 1 s at exit (atexit_sleep_ms).
		cmd.Env = append(os.Environ(), asBulwarkEnv+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
		return cmd
	}
	// The revocation lands at a random moment of the child's life, whose
	// read-modify-write comes at its end: measure how long a child lives.
	began := time.Now()
	if out, err := create("probe").CombinedOutput(); err != nil {
		t.Fatalf("keys create: %v\n%s", err, out)
	}
	life := time.Since(began)

	start, rounds, lost, missing := time.Now(), 0, 0, 0
	for b := range batches {
		// A fresh file: the operator key and this batch's victims.
		victims := map[string]string{}
		err := identity.UpdateKeysFile(ctx, keysFile, func(kf *identity.KeysFile) error {
			kf.Keys = append([]identity.KeyRecord(nil), ops.Keys...)
			for i := range perBatch {
				id := fmt.Sprintf("b%d-v%d", b, i)
				key, err := identity.NewAPIKey(rand.Reader, id)
				if err != nil {
					return err
				}
				victims[id] = key
				kf.Keys = append(kf.Keys, identity.KeyRecord{ID: id, Roles: []string{"user"}, Tenant: "acme",
					Hash: identity.HashAPIKey([]byte(keysTestPepper), key)})
			}
			return nil
		})
		if err == nil {
			err = auth.ReloadKeys()
		}
		if err != nil {
			t.Fatal(err)
		}
		work := make(chan int)
		errs := make(chan error, 2*perBatch)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := range work {
					cmd := create(fmt.Sprintf("b%d-c%d", b, i))
					if err := cmd.Start(); err != nil {
						errs <- err
						continue
					}
					time.Sleep(time.Duration(mrand.Int64N(int64(life) + 1)))
					r, err := client.RevokeKey(ctx, &bulwarkv1.RevokeKeyRequest{Id: fmt.Sprintf("b%d-v%d", b, i)})
					if err == nil && (len(r.GetKeys()) != 1 || r.GetKeys()[0].GetStatus() != bulwarkv1.KeyStatus_KEY_STATUS_REVOKED) {
						err = fmt.Errorf("answered %v", r)
					}
					if err != nil {
						errs <- fmt.Errorf("revoke b%d-v%d: %w", b, i, err)
					}
					if err := cmd.Wait(); err != nil {
						errs <- fmt.Errorf("keys create b%d-c%d: %w", b, i, err)
					}
				}
			})
		}
		for i := range perBatch {
			work <- i
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		kf, err := identity.ReadKeysFile(keysFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.ReloadKeys(); err != nil {
			t.Fatal(err)
		}
		for i := range perBatch {
			rounds++
			v := fmt.Sprintf("b%d-v%d", b, i)
			if r := kf.Find(v); r == nil || r.RevokedAt.IsZero() {
				lost++
			} else if p := auth.Authenticate(ctx, identity.Request{APIKey: victims[v]}); p.Error != identity.ReasonRevoked {
				t.Errorf("revoked key %s authenticates as %+v", v, p)
			}
			if kf.Find(fmt.Sprintf("b%d-c%d", b, i)) == nil {
				missing++
			}
		}
	}
	t.Logf("%d creates raced against %d revocations in %s (a child lives %s)", rounds, rounds, time.Since(start), life)
	if lost > 0 || missing > 0 {
		t.Fatalf("%d of %d acknowledged revocations undone, %d of %d created keys lost", lost, rounds, missing, rounds)
	}
}
