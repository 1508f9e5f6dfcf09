package sqldb_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cases := []struct {
		name, dsn, dialect string
		needs              string
	}{
		{"sqlite in the data dir", "", "sqlite", ""},
		{"sqlite by path", "sqlite:" + filepath.Join(dir, "other.db"), "sqlite", ""},
		{"postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres", "127.0.0.1:5432"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.needs != "" {
				testutil.RequireService(t, "PostgreSQL", c.needs)
			}
			db, err := sqldb.Open(ctx, c.dsn, dir)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if db.Dialect != c.dialect {
				t.Fatalf("dialect %s", db.Dialect)
			}
			if err := db.Ready(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := sqldb.Open(ctx, "postgres://nobody@127.0.0.1:1/x?connect_timeout=1", dir); err == nil {
		t.Fatal("unreachable postgres opened")
	}
}
