package rediskit_test

import (
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// snippetFrame is the program each snippet is compiled in: the names the
// README's snippets use without declaring them.
const snippetFrame = `package snippets

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rediskit/rediskit"
)

var (
	_ = errors.Is
	_ = fmt.Sprint
	_ = time.Second
)

type User struct {
	ID   int    ` + "`json:\"id\"`" + `
	Name string ` + "`json:\"name\"`" + `
}

type userDB struct{}

func (userDB) LoadUser(ctx context.Context, id int) (User, error) { return User{ID: id}, nil }

var (
	db         userDB
	data       []byte
	store      interface{ Write([]byte, int64) error }
	r1, r2, r3 redis.UniversalClient
	client     redis.UniversalClient
)

func doWork(ctx context.Context) error                     { return nil }
func loadUserFromDB(ctx context.Context) (User, error)     { return User{}, nil }
func loadUser(ctx context.Context) (User, error)           { return User{}, nil }

func snippet(ctx context.Context) error {
	_, _, _, _ = r1, r2, r3, rediskit.ErrCacheMiss
%s
	return nil
}
`

// Every Go snippet of the README and of the package doc compiles, with no
// variable left unused (an error nobody checks), in a function given ctx
// and client.
func TestReadmeSnippetsCompile(t *testing.T) {
	snippets := map[string]string{}
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	lines := strings.Split(string(readme), "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] != "```go" {
			continue
		}
		start := i + 1
		for i++; i < len(lines) && lines[i] != "```"; i++ {
		}
		snippets[fmt.Sprintf("README.md:%d", start)] = strings.Join(lines[start:i], "\n")
	}
	doc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	var block []string
	docLines := strings.Split(string(doc), "\n")
	for n, line := range docLines {
		if code, ok := strings.CutPrefix(line, "//\t"); ok {
			block = append(block, code)
			continue
		}
		if line == "//" && len(block) > 0 && n+1 < len(docLines) && strings.HasPrefix(docLines[n+1], "//\t") {
			block = append(block, "") // a blank line inside the block
			continue
		}
		if len(block) > 0 && strings.Contains(strings.Join(block, "\n"), "rediskit.") {
			snippets[fmt.Sprintf("doc.go:%d", n-len(block)+1)] = strings.Join(block, "\n")
		}
		block = nil
	}
	require.GreaterOrEqual(t, len(snippets), 5)
	for where, code := range snippets {
		t.Run(where, func(t *testing.T) {
			require.NoError(t, compileSnippet(code), "%s", code)
		})
	}
}

// An option meant for the other type does not compile: a Cache option
// given to a Locker, and the reverse; shared ones are taken by both.
func TestMisplacedOptionsDoNotCompile(t *testing.T) {
	for code, compiles := range map[string]bool{
		`_ = rediskit.NewLocker(client, rediskit.WithTTLJitter(0.5))`:                                                                   false,
		`_ = rediskit.NewRedlock(nil, rediskit.WithLocalCache(10, time.Minute))`:                                                        false,
		`_ = rediskit.NewCache[int](client, rediskit.WithLockTTL(time.Second))`:                                                         false,
		`_ = rediskit.NewLocker(client, rediskit.WithKeyPrefix("p:"), rediskit.WithHook(nil))`:                                          true,
		`_ = rediskit.NewCache[int](client, rediskit.WithKeyPrefix("p:"), rediskit.WithRetryBackoff(nil), rediskit.WithTTLJitter(0.1))`: true,
	} {
		err := compileSnippet(code)
		if compiles {
			require.NoError(t, err, code)
		} else {
			require.Error(t, err, code)
		}
	}
}

// The type checker's file set and importer, shared by the snippets, so
// that rediskit and go-redis are checked from source once.
var (
	snippetFset     = token.NewFileSet()
	snippetImporter = importer.ForCompiler(snippetFset, "source", nil)
)

// compileSnippet type-checks code in snippetFrame.
func compileSnippet(code string) error {
	f, err := parser.ParseFile(snippetFset, "snippet.go", fmt.Sprintf(snippetFrame, code), 0)
	if err != nil {
		return err
	}
	conf := types.Config{Importer: snippetImporter}
	_, err = conf.Check("snippets", snippetFset, []*ast.File{f}, nil)
	return err
}
