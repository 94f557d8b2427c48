package policy

import (
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// pushBundle pushes a bundle tarball to an OCI registry as OPA's OCI
// downloader expects it: an OCI image manifest whose layer is the bundle
// (application/vnd.oci.image.layer.v1.tar+gzip).
func pushBundle(t *testing.T, ref string, tarball []byte) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(tarball, types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

// An OCI registry (go-containerregistry's, in-process) serves signed
// bundles; a tampered bundle and a layer that is not a bundle are refused.
func TestOPABundleFromOCIRegistry(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/bundles/authz:latest"
	cfg := `services:
  ghcr:
    url: ` + reg.URL + `
    type: oci
keys:
  global_key:
    algorithm: HS256
    key: ` + testSigningKey + `
persistence_directory: ` + t.TempDir() + `
bundles:
  authz:
    service: ghcr
    resource: ` + ref + `
    trigger: manual
    signing:
      keyid: global_key
`
	o := newOPAEngine(t, cfg)
	pushBundle(t, ref, signedBundle(t, "v1", policyFor("alice"), false))
	if err := o.trigger(t); err != nil {
		t.Fatalf("OCI bundle: %v", err)
	}
	if st := o.e.Status(); !st.Ready || st.Bundles["authz"] != "v1" || !o.allows(t, "alice") {
		t.Fatalf("after v1 from the registry: %+v", st)
	}
	good := o.e.Revision()
	for _, tc := range []struct {
		name    string
		tarball []byte
		want    string
	}{
		{"tampered bundle", signedBundle(t, "v2", policyFor("alice"), true), "digest mismatch"},
		{"corrupt layer", []byte("\x1f\x8b\x08\x00garbage that is no gzip stream"), "bundle read failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pushBundle(t, ref, tc.tarball)
			if err := o.trigger(t); err == nil {
				t.Fatal("want an error")
			}
			st := o.e.Status()
			t.Logf("refused: %s", st.LastError)
			if st.Revision != good || !strings.Contains(st.LastError, tc.want) || o.allows(t, "mallory") || !o.allows(t, "alice") {
				t.Fatalf("status %+v: want %s kept and an error with %q", st, good, tc.want)
			}
		})
	}
}
