package deploy

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proxyBinary is twc-auth-proxy built by build.sh, as the Dockerfile
// builds it; once per test binary.
func proxyBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "twc-auth-proxy-deploy-test")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "twc-auth-proxy")
		cmd := exec.Command("sh", "build.sh", binPath)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("sh build.sh: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// TestStaticBinary checks that build.sh, which the Dockerfile runs, makes a
// static binary with the promised flags: it must run on distroless/static.
func TestStaticBinary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ELF check: linux only")
	}
	bin := proxyBinary(t)
	if err := CheckStatic(bin); err != nil {
		t.Fatal(err)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
		}
	}
	// -trimpath keeps -ldflags out of the build info: look for its effect.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: build.sh links with -s -w")
	}
	if _, ok := settings["vcs.revision"]; ok {
		t.Error("binary carries vcs.revision: the image build has no .git, so CI's binary would differ")
	}
}

// TestCheckStaticRejectsDynamic makes sure the static check can fail: a
// cgo binary linked against libc has an interpreter.
func TestCheckStaticRejectsDynamic(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ELF check: linux only")
	}
	// The system's own shell is dynamically linked on Debian.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	sh, _ = filepath.EvalSymlinks(sh)
	if err := CheckStatic(sh); err == nil {
		t.Errorf("CheckStatic(%s) = nil, want an error for a dynamically linked binary", sh)
	}
}

// TestDockerfile checks what the Dockerfile promises and CI cannot build:
// the Go version of go.mod, the shared build script, a numeric non-root
// user on a static base, and a context that includes the script.
func TestDockerfile(t *testing.T) {
	df := readFile(t, "../Dockerfile")
	goMod := readFile(t, "../go.mod")
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(goMod)
	goArg := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(df)
	if goLine == nil || goArg == nil || goLine[1] != goArg[1] {
		t.Errorf("Dockerfile ARG GO_VERSION %v, go.mod go %v: want equal", goArg, goLine)
	}
	if !strings.Contains(df, "sh deploy/build.sh ") {
		t.Error("Dockerfile does not build with deploy/build.sh")
	}
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+.*)$`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a multi-stage build", len(froms))
	}
	final := froms[len(froms)-1][1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage FROM %s, want distroless/static or scratch", final)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)$`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || !regexp.MustCompile(`^[1-9][0-9]*(:[0-9]+)?$`).MatchString(users[len(users)-1][1]) {
		t.Errorf("USER %v: want a numeric non-root user (runAsNonRoot cannot check a name)", users)
	}
	ignore := readFile(t, "../.dockerignore")
	var negated bool
	sc := bufio.NewScanner(strings.NewReader(ignore))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "!deploy/build.sh" {
			negated = true
		}
	}
	if strings.Contains(ignore, "deploy") && !negated {
		t.Error(".dockerignore excludes deploy/ without keeping deploy/build.sh")
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDockerContext builds the binary the way the Dockerfile does, from
// only what .dockerignore lets into the build context, and wants the very
// bytes build.sh makes from the checkout: CI's static check then holds for
// the image's binary, and the context lacks nothing the build needs.
func TestDockerContext(t *testing.T) {
	ignore := parseDockerignore(t, readFile(t, "../.dockerignore"))
	ctx := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if rel == ".git" {
				return filepath.SkipDir // never in the context; large
			}
			return nil
		}
		if ignore(rel) || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		dst := filepath.Join(ctx, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"go.mod", "go.sum", "deploy/build.sh", "cmd/twc-auth-proxy/main.go"} {
		if _, err := os.Stat(filepath.Join(ctx, must)); err != nil {
			t.Errorf(".dockerignore leaves %s out of the build context", must)
		}
	}
	for _, never := range []string{".git/HEAD", ".ci/run", "helm/twc-auth-proxy/Chart.yaml", "deploy/secret.yaml"} {
		if _, err := os.Stat(filepath.Join(ctx, never)); err == nil {
			t.Errorf(".dockerignore lets %s into the build context", never)
		}
	}
	out := filepath.Join(t.TempDir(), "twc-auth-proxy")
	cmd := exec.Command("sh", "deploy/build.sh", out)
	cmd.Dir = ctx
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build from the Docker context: %v\n%s", err, b)
	}
	fromContext, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	fromCheckout, err := os.ReadFile(proxyBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromContext, fromCheckout) {
		t.Error("the binary built from the Docker context differs from build.sh's in the checkout: the build is not reproducible")
	}
}

// parseDockerignore returns whether a slash-separated path is left out of
// the build context, with Docker's rules: patterns in order, the last
// match wins, "!" re-includes, "**" spans directories, and a pattern that
// matches a directory matches everything below it.
func parseDockerignore(t *testing.T, text string) func(string) bool {
	type rule struct {
		re     *regexp.Regexp
		negate bool
	}
	var rules []rule
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := rule{}
		if after, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, after
		}
		line = strings.TrimPrefix(path.Clean(strings.TrimPrefix(line, "/")), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		rx, err := regexp.Compile(re.String())
		if err != nil {
			t.Fatalf(".dockerignore %q: %v", line, err)
		}
		r.re = rx
		rules = append(rules, r)
	}
	return func(p string) bool {
		excluded := false
		for _, r := range rules {
			if r.re.MatchString(p) {
				excluded = !r.negate
			}
		}
		return excluded
	}
}
