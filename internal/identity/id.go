package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Paths of the mesh's SPIFFE IDs inside a trust domain.
const (
	servicePathPrefix = "/svc/"
	controlPath       = "/control"
)

// maxServiceName is the longest RFC 1123 label.
const maxServiceName = 63

// ServiceID returns spiffe://<td>/svc/<service>, the identity of every
// instance of service. service must be a valid name (see ValidateServiceName).
func ServiceID(td spiffeid.TrustDomain, service string) (spiffeid.ID, error) {
	if err := ValidateServiceName(service); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromPath(td, servicePathPrefix+service)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("service %q: %w", service, err)
	}
	return id, nil
}

// ServiceOf returns the service of a spiffe://<td>/svc/<service> ID; ok is
// false for any other shape, including an invalid service name.
func ServiceOf(id spiffeid.ID) (service string, ok bool) {
	if id.IsZero() {
		return "", false
	}
	service, ok = strings.CutPrefix(id.Path(), servicePathPrefix)
	if !ok || ValidateServiceName(service) != nil {
		return "", false
	}
	return service, true
}

// ControlID returns spiffe://<td>/control, the identity of the control plane;
// the zero ID if td is zero.
func ControlID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromPath(td, controlPath)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// ValidateServiceName reports whether name is a valid service name: a
// lowercase RFC 1123 label, 1 to 63 characters of a-z, 0-9 and '-', starting and
// ending with a letter or digit.
func ValidateServiceName(name string) error {
	switch {
	case name == "":
		return errors.New("service name is empty")
	case len(name) > maxServiceName:
		return fmt.Errorf("service name %q is %d characters, at most %d allowed", name, len(name), maxServiceName)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("service name %q must start and end with a letter or digit", name)
	}
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("service name %q: character %q at offset %d is not one of a-z, 0-9, '-'", name, c, i)
		}
	}
	return nil
}
