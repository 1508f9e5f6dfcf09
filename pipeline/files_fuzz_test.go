package pipeline

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/junctionhq/junction/config"
)

// FuzzFileInputs feeds arbitrary bytes to the CSV, JSON lines and JSON
// array readers: every record they hand out is either fields or a dead
// letter with its error, and reading ends with io.EOF or an error, never
// a panic or a record with neither.
func FuzzFileInputs(f *testing.F) {
	f.Add("csv", "sku,amount\na,1.5\nb,x\n")
	f.Add("csv", "a,b\n\"unterminated\n")
	f.Add("jsonl", "{\"a\":1}\nnot json\n\n[1,2]\n")
	f.Add("json", "[{\"a\":1},{\"b\":[2]}]")
	f.Add("json", "[{\"a\":1},")
	f.Fuzz(func(t *testing.T, kind, data string) {
		if kind != "csv" && kind != "jsonl" && kind != "json" {
			return
		}
		path := filepath.Join(t.TempDir(), "in."+kind)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		in, err := openFiles(kind, &config.FileInput{Path: path, Columns: map[string]string{"amount": "real", "n": "integer", "b": "boolean", "j": "json"}}, nil)
		if err != nil {
			return
		}
		defer in.Close()
		for range 10000 {
			recs, err := in.Next(context.Background())
			if errors.Is(err, io.EOF) || err != nil {
				return
			}
			for _, r := range recs {
				if r.Map() == nil && r.Err == nil || r.Position() == nil {
					t.Fatalf("record with neither fields nor error, or no position: %+v", r)
				}
			}
		}
		t.Fatal("the input never ended")
	})
}
