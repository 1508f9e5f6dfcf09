package pki_test

import (
	"fmt"
	"time"

	"github.com/junctionhq/junction/internal/pki"
)

func ExampleIdentityURI() {
	fmt.Println(pki.IdentityURI("orders"))
	// Output: spiffe://junction/service/orders
}

func ExampleCA_IssueTLS() {
	ca, err := pki.NewCA("example CA", time.Hour)
	if err != nil {
		panic(err)
	}
	cert, err := ca.IssueTLS("orders", []string{"127.0.0.1"}, 0)
	if err != nil {
		panic(err)
	}
	id, err := pki.Identity(cert.Leaf)
	fmt.Println(id, err)
	// Output: orders <nil>
}
