package ledger

import (
	"fmt"
	"strings"
)

// MaxIDLen is the longest account, transfer or refund id a client may use.
const MaxIDLen = 64

// refundSep joins an authorization's id and a refund id into the id of the
// refund's transfer. ':' is not allowed in client ids, so a refund transfer
// id can never collide with a client's transfer id.
const refundSep = ":refund:"

// ValidateID checks a client-chosen id (account, transfer, refund): 1 to 64
// characters of [A-Za-z0-9._-]. what names the field in the error.
func ValidateID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty (want 1-%d characters of [A-Za-z0-9._-])", what, MaxIDLen)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s is %d characters long (want at most %d)", what, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%s %q: invalid character %q at position %d (want [A-Za-z0-9._-])", what, id, rune(c), i+1)
		}
	}
	return nil
}

// RefundTransferID is the id of the transfer that carries refund refundID
// of the (card) transfer authorization.
func RefundTransferID(authorization, refundID string) string {
	return authorization + refundSep + refundID
}

// ParseRefundTransferID splits an id made by RefundTransferID; ok is false
// for any other id.
func ParseRefundTransferID(id string) (authorization, refundID string, ok bool) {
	authorization, refundID, ok = strings.Cut(id, refundSep)
	if !ok || ValidateID("authorization id", authorization) != nil || ValidateID("refund id", refundID) != nil {
		return "", "", false
	}
	return authorization, refundID, true
}

// ValidateTransferID checks the id of a transfer: a client id
// (ValidateID), or a refund transfer's id (RefundTransferID) when refundOf
// names the transfer it refunds.
func ValidateTransferID(id, refundOf string) error {
	if refundOf == "" {
		return ValidateID("transfer id", id)
	}
	auth, _, ok := ParseRefundTransferID(id)
	if !ok || auth != refundOf {
		return fmt.Errorf("refund transfer id %q: want %q", id, RefundTransferID(refundOf, "<refund id>"))
	}
	return nil
}
