package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/junctionhq/junction/config"
)

func init() {
	processors["validate"] = func(_ context.Context, _ *Env, cfg *config.PipelineProcess) (Processor, error) {
		return newValidator(cfg.Validate)
	}
}

// validator refuses the records that do not match a JSON Schema: they go
// to the dead letter with every reason, as "at '/amount': got string,
// want number". Records are checked as their JSON encoding (a timestamp
// is text, an integer a number).
type validator struct{ schema *jsonschema.Schema }

const validateSchemaURL = "urn:junction:pipeline:validate"

func newValidator(v any) (*validator, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(validateSchemaURL, doc); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	s, err := c.Compile(validateSchemaURL)
	if err != nil {
		return nil, fmt.Errorf("validate: not a valid JSON Schema: %w", err)
	}
	return &validator{s}, nil
}

func (p *validator) Process(_ context.Context, r *Record) ([]*Record, error) {
	b, err := json.Marshal(r.Map())
	if err != nil {
		return nil, fmt.Errorf("%w: validate: the record has no JSON form: %v", ErrRecord, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: validate: %v", ErrRecord, err)
	}
	if err := p.schema.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("%w: validate: %s", ErrRecord, strings.Join(validationReasons(ve, nil), "; "))
		}
		return nil, fmt.Errorf("%w: validate: %v", ErrRecord, err)
	}
	return []*Record{r}, nil
}

var validatePrinter = message.NewPrinter(language.English)

// validationReasons lists the leaves of a validation error's tree: the
// precise failures, each with where in the record it is.
func validationReasons(e *jsonschema.ValidationError, out []string) []string {
	if len(e.Causes) == 0 {
		loc := "/" + strings.Join(e.InstanceLocation, "/")
		return append(out, fmt.Sprintf("at '%s': %s", loc, e.ErrorKind.LocalizedString(validatePrinter)))
	}
	for _, c := range e.Causes {
		out = validationReasons(c, out)
	}
	return out
}
