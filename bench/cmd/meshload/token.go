package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// headerFlag collects -header "Name: value" flags: the gateway's JWT
// check needs the token on every request.
type headerFlag struct{ h http.Header }

func (f *headerFlag) String() string {
	if f == nil || f.h == nil {
		return ""
	}
	var parts []string
	for k := range f.h {
		parts = append(parts, k)
	}
	return strings.Join(parts, ",")
}

func (f *headerFlag) Set(v string) error {
	name, val, ok := strings.Cut(v, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return fmt.Errorf("header %q is not Name: value", v)
	}
	if f.h == nil {
		f.h = http.Header{}
	}
	f.h.Add(name, strings.TrimSpace(val))
	return nil
}

// tokenCmd prints one HS256 token for the gateway's JWT check, minted
// once before the runs: the token is the same on every request.
func tokenCmd(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	secret := fs.String("secret", "", "HMAC secret (at least 32 bytes)")
	issuer := fs.String("issuer", "bench", "iss claim")
	audience := fs.String("audience", "api", "aud claim")
	subject := fs.String("subject", "bench-client", "sub claim")
	ttl := fs.Duration("ttl", 10*365*24*time.Hour, "exp is now plus this")
	_ = fs.Parse(args)
	if len(*secret) < 32 {
		return errors.New("token: -secret must be at least 32 bytes")
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": *issuer,
		"aud": *audience,
		"sub": *subject,
		"iat": now.Unix(),
		"exp": now.Add(*ttl).Unix(),
	})
	s, err := tok.SignedString([]byte(*secret))
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout, s)
	return nil
}
