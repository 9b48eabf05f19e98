package identity_test

import (
	"errors"
	"fmt"

	"github.com/tally-mesh/tally/internal/identity"
)

func ExampleParseToken() {
	tok, err := identity.ParseToken("tally1.0123abcd.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8." +
		"Y29udHJvbC5tZXNoLmxvY2FsOjc0MDA.__79_Pv6-fj39vX08_Lx8O_u7ezr6uno5-bl5OPi4eA\n")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.ID, tok.Addr)
	// Output: 0123abcd control.mesh.local:7400
}

func ExampleTokenError() {
	_, err := identity.ParseToken("tally1.0123abcd.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8." +
		"MTI3LjAuMC4x.__79_Pv6-fj39vX08_Lx8O_u7ezr6uno5-bl5OPi4eA")
	fmt.Println(err)
	var te *identity.TokenError
	if errors.As(err, &te) {
		fmt.Println("field", te.Field)
	}
	// Output:
	// join token: field 4 (address): "127.0.0.1": missing port in address
	// field 4
}
