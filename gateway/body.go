package gateway

import (
	"io"
	"net/http"

	"github.com/junctionhq/junction/internal/problem"
)

// readBody reads at most limit bytes of r's body; a larger one is 413.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, problem.From(err)
	}
	return b, nil
}

func tooLarge(limit int64) error {
	return problem.New(problem.CodeTooLarge, "request body exceeds the limit of %d bytes", limit)
}
