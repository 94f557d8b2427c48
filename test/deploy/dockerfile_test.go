package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper-case: FROM, RUN, COPY, ...
	args string
}

// stage is one build stage: its FROM and what follows it.
type stage struct {
	image, name string
	ins         []instruction
}

// parseDockerfile splits a Dockerfile into stages. It knows the syntax these
// Dockerfiles use (comments, parser directives, backslash continuations),
// not every corner of BuildKit's.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			var f []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") { // --platform=...
					f = append(f, w)
				}
			}
			if len(f) == 0 {
				t.Fatalf("%s: FROM without an image", path)
			}
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %s before the first FROM", path, in.cmd)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := sc.Text()
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "#") {
			continue
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if len(stages) == 0 {
		t.Fatalf("%s: no FROM", path)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// checkFinalStage pins what the running container is: a static base
// (distroless static or scratch), a non-root user, and only the build
// stages' outputs copied in.
func checkFinalStage(t *testing.T, path string, stages []stage, entrypoint []string) {
	t.Helper()
	for _, s := range stages {
		if s.image != "scratch" {
			checkImagePinned(t, s.image)
		}
	}
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") && final.image != "scratch" {
		t.Errorf("%s: final image %s, want gcr.io/distroless/static-* or scratch (nothing but a static binary)", path, final.image)
	}
	if strings.Contains(final.image, "distroless") && !strings.HasSuffix(final.image, ":nonroot") {
		t.Errorf("%s: final image %s, want the :nonroot variant", path, final.image)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Errorf("%s: the final stage sets no USER", path)
	} else if u, _, _ := strings.Cut(users[len(users)-1].args, ":"); u != "65532" && u != "nonroot" {
		t.Errorf("%s: USER %s, want 65532 (nonroot)", path, users[len(users)-1].args)
	}
	for _, c := range final.all("COPY") {
		if !strings.Contains(c.args, "--from=") {
			t.Errorf("%s: final stage copies from the build context (%s): only build outputs belong there", path, c.args)
		}
	}
	eps := final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("%s: want one ENTRYPOINT in the final stage, got %d", path, len(eps))
	}
	var ep []string
	if err := json.Unmarshal([]byte(eps[0].args), &ep); err != nil {
		t.Errorf("%s: ENTRYPOINT %s is not in exec (JSON) form: signals would go to a shell", path, eps[0].args)
	}
	if !slices.Equal(ep, entrypoint) {
		t.Errorf("%s: ENTRYPOINT %q, want %q", path, ep, entrypoint)
	}
}

// checkStaticBuild pins the Go build: no cgo (the final image has no libc),
// reproducible paths, stripped.
func checkStaticBuild(t *testing.T, path string, stages []stage) {
	t.Helper()
	// The builder's Go is go.mod's toolchain: the standard-library fixes
	// make vulncheck relies on are in the image too.
	if want := "golang:" + strings.TrimPrefix(goToolchain(t), "go"); stages[0].image != want {
		t.Errorf("%s: builder %s, want %s (go.mod's toolchain line)", path, stages[0].image, want)
	}
	var build string
	for _, r := range stages[0].all("RUN") {
		if strings.Contains(r.args, "go build") {
			build = r.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-ldflags", "-s -w"} {
		if !strings.Contains(build, want) {
			t.Errorf("%s: go build (%q) lacks %s", path, build, want)
		}
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	const path = "../../Dockerfile"
	stages := parseDockerfile(t, path)
	if len(stages) < 2 {
		t.Fatalf("%s: %d stages, want a builder and a final stage", path, len(stages))
	}
	checkStaticBuild(t, path, stages)
	checkFinalStage(t, path, stages, []string{"/bulwark", "serve"})
	final := stages[len(stages)-1]
	var exposed []string
	for _, e := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(e.args)...)
	}
	for _, p := range []string{"9191", "9192", "9193"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
}

func TestStubLLMDockerfile(t *testing.T) {
	t.Parallel()
	const path = "../../deploy/compose/stubllm/Dockerfile"
	stages := parseDockerfile(t, path)
	checkStaticBuild(t, path, stages)
	checkFinalStage(t, path, stages, []string{"/stubllm"})
}

// TestDockerignore checks the build context's allow-list: it starts by
// excluding everything, and it lets in every package directory the images
// compile (so a new internal package cannot break docker build unnoticed).
func TestDockerignore(t *testing.T) {
	t.Parallel()
	var allow, deny []string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "../../.dockerignore")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "!"):
			allow = append(allow, strings.TrimSuffix(strings.TrimPrefix(line, "!"), "/"))
		default:
			deny = append(deny, line)
		}
	}
	if len(deny) == 0 || deny[0] != "*" {
		t.Fatalf(".dockerignore must start by excluding everything (*), got %v", deny)
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if !slices.Contains(allow, f) {
			t.Errorf(".dockerignore does not let in %s", f)
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the packages the images build")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/bulwark", "./deploy/compose/stubllm")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency in the module cache
		}
		rel = filepath.ToSlash(rel)
		if !slices.ContainsFunc(allow, func(a string) bool { return rel == a || strings.HasPrefix(rel, a+"/") }) {
			t.Errorf("package directory %s is built into an image but excluded by .dockerignore", rel)
		}
	}
}

// goToolchain returns go.mod's toolchain line ("go1.27.3").
func goToolchain(t *testing.T) string {
	t.Helper()
	b := readFile(t, "../../go.mod")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "toolchain "); ok {
			return v
		}
	}
	t.Fatal("go.mod has no toolchain line")
	return ""
}
